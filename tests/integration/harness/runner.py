"""`apply`, the graph runner: the plan carried out in dependency order, independent resources in
parallel, deletes last; and `teardown`, `destroy` and `purge_volumes`, which clean up after it."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from tests.integration import plan as plan_mod
from tests.integration.harness.commands import Context, check_command, command_step, host_command_target, is_gate
from tests.integration.harness.containers import container_step, delete_container, own, remove_container
from tests.integration.harness.engine import GRACE_LABEL, api, api_version, get_or_none, labelled
from tests.integration.harness.errors import HarnessError
from tests.integration.harness.inputs import image_build, mock_repo_digest, network_body, plan_container, volume_body
from tests.integration.harness.kinds import CONTAINER, IMAGE, NETWORK, VOLUME, check_type
from tests.integration.harness.state import STATE, Applied, Entry, State, build_plan, resolved
from tests.integration.images import pip_cert


def _applied_kinds(res: dict[str, Any]) -> bool:
    return res["type"] in (NETWORK, VOLUME, IMAGE, CONTAINER) or (
        res["type"] == "command:local:Command" and bool(host_command_target(res) or is_gate(res))
    )


def _order(resources: list[dict[str, Any]], depends: dict[str, set[str]]) -> dict[str, set[str]]:
    names = {r["name"] for r in resources}
    return {r["name"]: {d for d in depends.get(r["name"], ()) if d in names} for r in resources}


def _run_graph(graph: dict[str, set[str]], work: Callable[[str], None], max_workers: int = 8) -> None:
    """Runs work(name) for every node once all its dependencies are done, independent ones in
    parallel (as the Pulumi engine does). The first failure stops new work and is raised."""
    done: set[str] = set()
    running: dict[Future[None], str] = {}
    error: BaseException | None = None
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        while True:
            if error is None:
                started = set(running.values())
                for name, deps in graph.items():
                    if name not in done and name not in started and deps <= done:
                        running[pool.submit(work, name)] = name
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                exc = future.exception()
                if exc is not None and error is None:
                    error = exc
                done.add(name)
    if error is not None:
        raise error
    missing = set(graph) - done
    if missing:
        raise HarnessError(f"dependency cycle or missing dependency among {sorted(missing)}")


def _create_network(res: dict[str, Any], state: State) -> str:
    body = network_body(res)
    existing = get_or_none(f"/networks/{urllib.parse.quote(body['Name'])}")
    own("network", existing, body["Name"])
    if existing is not None:
        if res["name"] in state.entries:
            # Replaced create-first, as the engine does any resource but a container: the old one
            # still holds the fixed name, so the real `up` fails the same way.
            raise HarnessError(f"{res['name']}: network {body['Name']} is replaced create-first and its name is taken")
        api("DELETE", f"/networks/{existing['Id']}")  # left by an earlier process, in no state
    return str(api("POST", "/networks/create", body)["Id"])


def _create_volume(res: dict[str, Any], state: State) -> str:
    body = volume_body(res)
    existing = get_or_none(f"/volumes/{urllib.parse.quote(body['Name'])}")
    own("volume", existing, body["Name"])
    if existing is not None and res["name"] in state.entries:
        raise HarnessError(f"{res['name']}: volume {body['Name']} is replaced create-first and its name is taken")
    if existing is None:
        api("POST", "/volumes/create", body)
    # A named volume of an earlier process is adopted with its data, as a volume survives a destroy.
    return str(body["Name"])


# A recipe that takes this optional file (components/gateway/router/Dockerfile) gets the CA bundle
# the host's pip trusts, in a copy of its context: this network intercepts TLS.
BUILD_CA = "build-ca.crt"


def _build_image(res: dict[str, Any]) -> str:
    tag, argv = image_build(res)
    context = Path(argv[-1])
    dockerfile = context / "Dockerfile"
    cert = pip_cert()
    with tempfile.TemporaryDirectory() as tmp:
        if cert is not None and dockerfile.is_file() and BUILD_CA in dockerfile.read_text():
            copy = Path(tmp) / "context"
            shutil.copytree(context, copy, ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copyfile(cert, copy / BUILD_CA)
            argv = [*argv[:-1], str(copy)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        raise HarnessError(f"{res['name']}: {shlex.join(argv)} failed:\n{(result.stdout + result.stderr)[-4000:]}")
    image = get_or_none(f"/images/{urllib.parse.quote(tag, safe='')}/json")
    assert image is not None
    return str(image["Id"])


def apply(
    synth: Any, *, uploads: str = "provider", max_workers: int = 8, state: State | None = None, quiet: bool = False
) -> Applied:
    """`pulumi up` of `synth` against `state` (default: `STATE`): plan every resource against the
    stored state by the providers' rules (`tests/integration/plan.py`), print the plan, then carry
    it out as the engine does: networks, volumes and images first, then containers and commands
    in dependency order (independent ones in parallel), deletes last. Raises on the first failure,
    leaving what was created in state and on the engine for `teardown()`.

    `uploads="provider"` extracts uploads at / like the Docker provider (refused for readOnly
    containers); `uploads="into-volumes"` extracts a file at the volume it lands in, which works."""
    if uploads not in ("provider", "into-volumes"):
        raise ValueError(f"uploads={uploads!r}: 'provider' or 'into-volumes'")
    state = STATE if state is None else state
    applied = Applied()
    resources: list[dict[str, Any]] = []
    for res in synth.resources:
        reason = check_type(res)
        if reason is not None and not _applied_kinds(res):
            applied.skipped[res["name"]] = reason
            applied.actions[res["name"]] = "skipped"
        else:
            resources.append(res)
    supported = api_version() >= (1, 44)
    for res in resources:
        # Checked before anything is created: a mapping error must not leave half a stack.
        if res["type"] == CONTAINER:
            plan_container(res, "x", start_interval_supported=True, uploads=uploads)
        elif res["type"] == NETWORK:
            network_body(res)
        elif res["type"] == VOLUME:
            volume_body(res)
        elif res["type"] == IMAGE:
            image_build(res)
        else:
            check_command(res)
    try:
        digests: dict[str, str] = {}
        for res in resources:
            if res["type"] == IMAGE:
                # `docker build` from its cache; the id is what a container's image input reads.
                applied.images[res["name"]] = _build_image(res)
                digests[mock_repo_digest(res)] = res["name"]
        plan = build_plan(resources, state, applied.images, digests)
        applied.plan = plan
        if not quiet:
            print(plan.render())
        ctx = Context(state, applied, plan, supported, uploads)
        for kind in (NETWORK, VOLUME, IMAGE):
            for res in resources:
                if res["type"] != kind:
                    continue
                _simple_step(res, plan.steps[res["name"]], ctx)
        by_name = {r["name"]: r for r in resources if r["type"] == CONTAINER or r["type"].startswith("command:")}
        graph = _order(list(by_name.values()), synth.depends)
        ids: dict[str, str | None] = {}

        def work(name: str) -> None:
            res = by_name[name]
            with ctx.lock:
                ids.update({n: e.id for n, e in state.entries.items()})
            inputs = resolved(res, ids, applied.images, digests)
            if res["type"] == CONTAINER:
                container_step(res, plan.steps[name], ctx, inputs)
            else:
                command_step(res, plan.steps[name], ctx, inputs)

        _run_graph(graph, work, max_workers)
        for action in ctx.at_end:
            action()
        _deletes(plan, ctx)
    except HarnessError as err:
        err.applied = applied
        raise
    return applied


def _simple_step(res: dict[str, Any], step: plan_mod.Step, ctx: Context) -> None:
    name, state, applied = res["name"], ctx.state, ctx.applied
    entry = state.entries.get(name)
    if res["type"] == IMAGE:
        state.entries[name] = Entry(IMAGE, dict(res["inputs"]), applied.images[name])
        applied.actions[name] = "built"
        return
    if step.op in ("same", "record", "update"):
        assert entry is not None
        state.entries[name] = Entry(res["type"], dict(res["inputs"]), entry.id)
        made = entry.id
        applied.actions[name] = "kept" if step.op == "same" else "recorded"
    else:
        made = _create_network(res, state) if res["type"] == NETWORK else _create_volume(res, state)
        state.entries[name] = Entry(res["type"], dict(res["inputs"]), made)
        applied.actions[name] = "created"
    if res["type"] == NETWORK:
        applied.networks[name] = made
    else:
        applied.volumes[name] = str(res["inputs"].get("name") or name)


def _deletes(plan: plan_mod.Plan, ctx: Context) -> None:
    """What the program no longer has, dependents first: commands (their stored delete), then
    containers (stopped with their grace), then networks and volumes."""
    order = ("command:", CONTAINER, NETWORK, VOLUME, IMAGE)
    for kind in order:
        for step in [s for s in plan.steps.values() if s.op == "delete" and s.type.startswith(kind)]:
            entry = ctx.state.entries.get(step.name)
            if entry is None:
                continue
            if kind == "command:":
                ctx.delete_command(step.name)
            elif kind == CONTAINER:
                delete_container(entry.id, int(entry.inputs.get("destroyGraceSeconds") or 0))
                del ctx.state.entries[step.name]
            elif kind == NETWORK:
                api("DELETE", f"/networks/{entry.id}", ok=(204, 404))
                del ctx.state.entries[step.name]
            else:
                # A Volume resource's delete removes it, data and all; an Image's keeps the local image.
                if kind == VOLUME:
                    api("DELETE", f"/volumes/{urllib.parse.quote(entry.id)}", ok=(204, 404))
                del ctx.state.entries[step.name]
            ctx.applied.actions[step.name] = "deleted"


def teardown(graceful: bool = False, only: Applied | None = None, state: State | None = None) -> list[str]:
    """Remove every labelled container (with its anonymous volumes) and network; named volumes stay,
    as after a `pulumi destroy` of the containers. `graceful` stops each container first with its
    destroyGraceSeconds, as the provider's delete does. `only` limits the removal to what one
    `apply` created (tests that share the engine with a running stack). Returns the names removed;
    what is removed leaves `state` (default: `STATE`; every state without `only`)."""
    states = [STATE if state is None else state] if only is not None else [STATE, *([state] if state else [])]
    removed = []
    for container in labelled("containers"):
        if only is not None and container["Id"] not in only.containers.values():
            continue
        if graceful and container.get("State") == "running":
            grace = (container.get("Labels") or {}).get(GRACE_LABEL, "0")
            delete_container(container["Id"], int(grace))
        remove_container(container["Id"])
        removed.append(container["Names"][0].lstrip("/"))
    for network in labelled("networks"):
        if only is not None and network["Id"] not in only.networks.values():
            continue
        api("DELETE", f"/networks/{network['Id']}", ok=(204, 404))
        removed.append(network["Name"])
    for st in states:
        if only is None:
            st.entries.clear()
            continue
        gone = set(only.containers.values()) | set(only.networks.values())
        for name in [n for n, e in st.entries.items() if e.id in gone or n in only.actions]:
            del st.entries[name]
    return removed


def destroy(names: list[str], state: State | None = None) -> None:
    """`pulumi destroy --target` of containers in `state`: the provider's delete, a stop with the
    `destroyGraceSeconds` the state holds, then the removal."""
    state = STATE if state is None else state
    for name in names:
        entry = state.entries.pop(name)
        delete_container(entry.id, int(entry.inputs.get("destroyGraceSeconds") or 0))


def purge_volumes() -> list[str]:
    """Remove the labelled named volumes (end of a CI session: data would otherwise pile up)."""
    removed = []
    for volume in labelled("volumes"):
        api("DELETE", f"/volumes/{urllib.parse.quote(volume['Name'])}", ok=(204, 404))
        removed.append(volume["Name"])
    return removed
