"""Containers as the Docker provider handles them: create (then wait for running or healthy, and
store the Read), in-place update through ContainerUpdate, delete-first replace, delete with grace."""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

from tests.integration import plan as plan_mod
from tests.integration.harness.commands import Context
from tests.integration.harness.engine import TEST_LABEL, TEST_VALUE, api, get_or_none, inspect, logs_tail
from tests.integration.harness.errors import EngineError, HarnessError
from tests.integration.harness.inputs import plan_container
from tests.integration.harness.kinds import CONTAINER
from tests.integration.harness.state import UPDATE_FIELDS, Applied, Entry, State, readback, written

RUNNING_TIMEOUT = 15.0


def _wait_container(name: str, want_healthy: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state = inspect(name)["State"]
        health = (state.get("Health") or {}).get("Status")
        if want_healthy and health == "healthy":
            return
        if not want_healthy and state.get("Running"):
            return
        if state.get("Status") in ("exited", "dead") and not state.get("Restarting"):
            raise HarnessError(
                f"container {name} exited with {state.get('ExitCode')} ({state.get('Error') or 'no error'});"
                f" logs:\n{logs_tail(name)}"
            )
        if time.monotonic() > deadline:
            log = (state.get("Health") or {}).get("Log") or []
            last = log[-1] if log else {}
            raise HarnessError(
                f"container {name} not {'healthy' if want_healthy else 'running'} after {timeout:.0f} s"
                f" (status {state.get('Status')}, health {health}); last health check: {json.dumps(last)[:2000]};"
                f" logs:\n{logs_tail(name)}"
            )
        time.sleep(1)


def own(kind: str, existing: dict[str, Any] | None, name: str) -> None:
    """An object of this name that the harness did not create is never touched."""
    if existing is not None and (existing.get("Labels") or {}).get(TEST_LABEL) != TEST_VALUE:
        raise HarnessError(f"{kind} {name} exists and was not created by the harness")


def remove_container(id_or_name: str) -> None:
    try:
        api("DELETE", f"/containers/{id_or_name}", params={"force": "1", "v": "1"})
    except EngineError as err:
        if err.status != 404:
            raise


def delete_container(cid: str, grace: int) -> None:
    """The provider's delete: a stop with `destroy_grace_seconds` (0 when unset: the stop signal
    and at once SIGKILL), then the removal with its anonymous volumes."""
    try:
        api("POST", f"/containers/{cid}/stop", params={"t": str(grace)}, timeout=grace + 60, ok=(204, 304))
    except EngineError as err:
        if err.status != 404:
            raise
    remove_container(cid)


def _create_container(
    res: dict[str, Any], inputs: dict[str, Any], supported: bool, uploads: str, applied: Applied, state: State
) -> None:
    image = str(inputs["image"])
    if get_or_none(f"/images/{urllib.parse.quote(image, safe='')}/json") is None:
        raise HarnessError(f"{res['name']}: image {image} is not on the engine (see tests/integration/images)")
    plan = plan_container({**res, "inputs": inputs}, image, start_interval_supported=supported, uploads=uploads)
    applied.notes.extend(plan.notes)
    existing = get_or_none(f"/containers/{urllib.parse.quote(plan.name)}/json")
    if existing is not None:
        own("container", existing["Config"], plan.name)
        remove_container(existing["Id"])  # left by an earlier process, in no state
    started = time.monotonic()
    created = api("POST", "/containers/create", plan.body, params={"name": plan.name})
    cid = str(created["Id"])
    if plan.extra_networks:
        api("POST", "/networks/bridge/disconnect", {"Container": cid, "Force": False}, ok=(200, 204))
    for network, endpoint in plan.extra_networks:
        api("POST", f"/networks/{urllib.parse.quote(network)}/connect", {"Container": cid, "EndpointConfig": endpoint})
    applied.containers[res["name"]] = cid
    applied.names[res["name"]] = plan.name
    # Stored as soon as it exists, as the provider does: a failed wait leaves it in state, tainted.
    state.entries[res["name"]] = Entry(CONTAINER, inputs, cid)
    for root, archive in plan.archives:
        # copyUIDGID keeps the tar's uid/gid (the `owner`/`group` inputs); without it Docker chowns to root.
        try:
            api(
                "PUT",
                f"/containers/{cid}/archive",
                params={"path": root},
                raw=archive,
                content_type="application/x-tar",
            )
        except EngineError as err:
            hint = ""
            if "read-only" in str(err) and root == "/":
                hint = (
                    " (the Docker provider extracts every upload at /, which Docker refuses for readOnly"
                    " containers; apply(..., uploads='into-volumes') extracts at the volume instead)"
                )
            raise HarnessError(f"{res['name']}: upload failed: {err}{hint}") from err
    api("POST", f"/containers/{cid}/start")
    _wait_container(plan.name, plan.wait, plan.wait_timeout if plan.wait else RUNNING_TIMEOUT)
    applied.seconds[res["name"]] = round(time.monotonic() - started, 1)
    state.entries[res["name"]] = Entry(CONTAINER, readback(cid, inputs), cid)


def container_step(res: dict[str, Any], step: plan_mod.Step, ctx: Context, inputs: dict[str, Any]) -> None:
    name, state, applied = res["name"], ctx.state, ctx.applied
    entry = state.entries.get(name)
    if step.op in ("same", "record", "update"):
        assert entry is not None
        applied.containers[name], applied.names[name] = entry.id, str(inputs.get("name"))
        if step.op == "update":
            # The provider's Update: one ContainerUpdate with the resources and restart policy.
            host = plan_container({**res, "inputs": inputs}, "x", start_interval_supported=True)
            body = {k: host.body["HostConfig"][k] for k in UPDATE_FIELDS if k in host.body["HostConfig"]}
            api("POST", f"/containers/{entry.id}/update", body)
        if step.op != "same":
            state.entries[name] = Entry(CONTAINER, written(entry.inputs, inputs), entry.id)
        applied.actions[name] = {"same": "kept", "record": "recorded", "update": "updated"}[step.op]
        return
    if step.op == "replace":
        assert entry is not None
        # Delete-before-replace: the dependents the replacement replaces go first (a worker's
        # gateway membership: its delete drains the worker), then the container itself.
        for other in ctx.plan.steps.values():
            if name in other.deleted_before:
                ctx.delete_command(other.name)
        delete_container(entry.id, int(entry.inputs.get("destroyGraceSeconds") or 0))
        del state.entries[name]
    _create_container(res, inputs, ctx.supported, ctx.uploads, applied, state)
    applied.actions[name] = "replaced" if step.op == "replace" else "created"
