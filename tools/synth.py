"""Offline synth: run the program through Pulumi's mock runtime and capture what it would deploy.

The `helm template` of this project: no Pulumi CLI, no credentials, no engine. Secret config
values in the stack file are never decrypted; they reach the program as the placeholder
`[secret]`, still marked secret, and every secret input is written out as `[secret]`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings
from pulumi.runtime.stack import run_pulumi_func

from components import inline
from stacks.errors import NAMESPACE
from stacks.stackfile import read_stack_file as read_stack_file  # re-exported: tests read stack files here

ROOT = Path(__file__).resolve().parent.parent
SECRET = "[secret]"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_SIG_KEY = "4dabf18193072939515e22adb298388d"
_UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def _clean(value: Any, names: dict[str, str], reveal: bool = False) -> Any:
    if isinstance(value, dict):
        sig = value.get(_SIG_KEY)
        if sig == _SECRET_SIG:
            return _clean(value.get("value"), names, reveal) if reveal else SECRET
        if sig == _RESOURCE_SIG:
            return names.get(value.get("urn", ""), value.get("urn"))
        return {k: _clean(v, names, reveal) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, names, reveal) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value == _UNKNOWN:
        return "[unknown]"
    return value


# pulumi-command marks a remote command's whole `connection` secret (remote/command.go:46 at
# v1.2.1, 7f3eb6f), and its SDK wraps it in `Output.secret`, which unwraps the secrets inside it
# (pulumi/output.py `secret`), so in state it stays one secret. Of its fields only these are
# secrets (remote/connection.go:43-47, the same in `proxy`): a render writes the host, port, user
# and host key in the clear, so a reviewer sees where each command runs, and these as "[secret]".
_CONNECTION_SECRETS = {"password", "privateKey", "privateKeyPassword"}


def _connection(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict) and value.get(_SIG_KEY) == _SECRET_SIG:
        value = value.get("value")
    if not isinstance(value, dict):
        return _clean(value, names)
    return {
        k: SECRET if k in _CONNECTION_SECRETS else _connection(v, names) if k == "proxy" else _clean(v, names)
        for k, v in value.items()
    }


def _inputs(type_: str, raw: dict[str, Any], names: dict[str, str], reveal: bool) -> dict[str, Any]:
    inputs: dict[str, Any] = _clean(raw, names, reveal)
    if type_ == "command:remote:Command" and not reveal and "connection" in raw:
        inputs["connection"] = _connection(raw["connection"], names)
    return inputs


@dataclass
class Synth:
    resources: list[dict[str, Any]] = field(default_factory=list)
    """One object per resource: type, name, parent, inputs (camelCase, secrets redacted)."""

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["type"] == type_]

    def named(self, name: str) -> dict[str, Any]:
        return next(r for r in self.resources if r["name"] == name)

    depends: dict[str, set[str]] = field(default_factory=dict)
    """Explicit `depends_on` of each resource, by name (not written to resources.json)."""

    def depends_on(self, name: str, other: str) -> bool:
        """Whether `name` waits for `other`, directly or through a chain of dependencies."""
        seen, todo = set(), [name]
        while todo:
            current = todo.pop()
            for dep in self.depends.get(current, ()):
                if dep == other:
                    return True
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return False

    retained: set[str] = field(default_factory=set)
    """Resources a `destroy` leaves in place (`retain_on_delete`), by name."""
    delete_first: set[str] = field(default_factory=set)
    """Resources replaced delete-before-replace, by name."""
    timeouts: dict[str, dict[str, str]] = field(default_factory=dict)
    """`customTimeouts` (create, update, delete as Go durations) of each resource that sets them, by name."""
    aliases: dict[str, list[str]] = field(default_factory=dict)
    """The earlier URNs each resource answers to (`opts.aliases`), by name."""

    def files(self) -> dict[str, str]:
        """Generated files, keyed `<resource name>/<path>`: container uploads at their absolute path,
        and each host step's script under its own name."""
        out = {}
        for res in self.resources:
            for upload in res["inputs"].get("uploads", []):
                out[f"{res['name']}{upload['file']}"] = upload.get("content", SECRET)
            if res["type"] in ("command:remote:Command", "command:local:Command"):
                # A plain command (the gateway reload, a member step) carries no script.
                carried = inline.script_of(res["inputs"]["create"])
                if carried is not None:
                    name, source = carried
                    out[f"{res['name']}/{name}"] = source
        return out


class Mocks(pulumi.runtime.Mocks):
    """Echo inputs back as state, with deterministic ids and the few computed outputs the
    program reads (Docker object names, random passwords). `stdout` maps command resource names
    to what the command prints, to simulate a host's measured GPU inventory; unlisted commands
    print nothing known, and the up-time preflight then waits for a real run."""

    def __init__(self, stdout: dict[str, str] | None = None, runs: dict[str, str] | None = None) -> None:
        self.stdout = stdout or {}
        self.runs = runs or {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ.startswith("docker:index/") and "name" not in state:
            state["name"] = args.name
        if args.name in self.stdout:
            state["stdout"] = self.stdout[args.name]
        if args.typ == "random:index/randomPassword:RandomPassword":
            digest = hashlib.sha256(args.name.encode()).hexdigest()
            state["result"] = digest[: int(args.inputs.get("length", 32))]
        if args.typ == "docker:index/image:Image":
            # A local build's repoDigest is its image id; a stand-in derived from the inputs.
            built = json.dumps(args.inputs, sort_keys=True, default=str)
            state["repoDigest"] = "sha256:" + hashlib.sha256(built.encode()).hexdigest()
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token == "command:local:run":
            # `runs` maps a command line to what it prints (a host's layout); others print nothing.
            return {"stdout": self.runs.get(str(args.args.get("command")), ""), "stderr": ""}, []
        return {}, []


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.records: list[tuple[str, str, str, str, Any]] = []
        self.dependencies: dict[str, list[str]] = {}
        self.retained: list[str] = []
        self.delete_first: list[str] = []
        self.timeouts: dict[str, dict[str, str]] = {}
        self.aliases: dict[str, list[str]] = {}

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        if request.type != "pulumi:pulumi:Stack":
            raw = json_format.MessageToDict(request.object, preserving_proto_field_name=True)
            urn = self.make_urn(request.parent, request.type, request.name)
            self.records.append((urn, request.type, request.name, request.parent, raw))
            self.dependencies[urn] = list(request.dependencies)
            if request.retainOnDelete:
                self.retained.append(urn)
            if request.deleteBeforeReplace:
                self.delete_first.append(urn)
            custom = request.customTimeouts
            if custom.create or custom.update or custom.delete:
                self.timeouts[urn] = {"create": custom.create, "update": custom.update, "delete": custom.delete}
            if request.aliases:
                self.aliases[urn] = [self.alias_urn(request, alias) for alias in request.aliases]
        return super().RegisterResource(request)  # type: ignore[no-untyped-call]

    def alias_urn(self, request: Any, alias: Any) -> str:
        """The URN an alias names. Each field a spec leaves out is the resource's own, and the parent
        is the current one unless `noParent` (pulumi/pulumi `proto/pulumi/alias.proto`, `Alias.Spec`)."""
        if alias.HasField("urn"):
            return str(alias.urn)
        spec = alias.spec
        parent = "" if spec.noParent else (spec.parentUrn or request.parent)
        return self.make_urn(parent, spec.type or request.type, spec.name or request.name)


def _give_loop(loops: list[asyncio.AbstractEventLoop]) -> None:
    """Gives an executor thread its event loop, and keeps it to be closed. The mock monitor runs
    every registration in the program loop's default executor and, left alone, makes each thread
    a loop that nobody closes (`_ensure_event_loop` in pulumi/runtime/mocks.py RegisterResource).
    At exit the garbage collector then finalizes such a loop after its self-pipe socket, and
    `BaseEventLoop.__del__` prints `Exception ignored ... Invalid file descriptor: -1`."""
    own = asyncio.new_event_loop()
    asyncio.set_event_loop(own)
    loops.append(own)


def run(
    stack: str,
    config: dict[str, str],
    secret_keys: list[str],
    program: Callable[[], Any],
    monitor: RecordingMonitor | None = None,
    stdout: dict[str, str] | None = None,
    reveal: bool = False,
    runs: dict[str, str] | None = None,
) -> Synth:
    """Runs `program` under mocks in a fresh event loop and returns what it registered. With
    `reveal`, secret inputs keep their values (for the integration harness, which must create the
    containers for real; never written to a render)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    thread_loops: list[asyncio.AbstractEventLoop] = []
    executor = ThreadPoolExecutor(thread_name_prefix="synth", initializer=_give_loop, initargs=(thread_loops,))
    loop.set_default_executor(executor)
    mocks = Mocks(stdout, runs)
    monitor = monitor or RecordingMonitor(mocks)
    try:
        pulumi.runtime.set_all_config(config, secret_keys)
        pulumi.runtime.set_mocks(mocks, project=NAMESPACE, stack=stack, preview=False, monitor=monitor)
        # The loop is ours and idle: run_until_complete is what the SDK's private _sync_await
        # (pulumi/runtime/sync_await.py) does with a loop that is not running.
        loop.run_until_complete(run_pulumi_func(program))
    finally:
        # A failed program (a config or preflight error) leaves registrations in flight.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        settings.reset_options()
        pulumi.runtime.set_all_config({}, [])
        asyncio.set_event_loop(None)
        executor.shutdown(wait=True)
        for thread_loop in thread_loops:
            thread_loop.close()
        loop.close()
    names = {urn: name for urn, _, name, _, _ in monitor.records}
    resources = [
        {
            "type": type_,
            "name": name,
            "parent": names.get(parent) if parent else None,
            "inputs": _inputs(type_, raw, names, reveal),
        }
        for _, type_, name, parent, raw in monitor.records
    ]
    resources.sort(key=lambda r: (r["name"], r["type"]))
    depends = {names[urn]: {names[d] for d in deps if d in names} for urn, deps in monitor.dependencies.items()}
    return Synth(
        resources,
        depends,
        {names[urn] for urn in monitor.retained},
        {names[urn] for urn in monitor.delete_first},
        {names[urn]: t for urn, t in monitor.timeouts.items()},
        {names[urn]: a for urn, a in monitor.aliases.items()},
    )


def synth_stack(
    stack: str, stack_file: Path | None = None, secrets: dict[str, str] | None = None, reveal: bool = False
) -> Synth:
    """`secrets` (short key to value) are set as secret config, as `pulumi config set --secret` would."""
    from composition.platform import main

    config, secret_keys = read_stack_file(stack_file or ROOT / f"Pulumi.{stack}.yaml")
    for key, value in (secrets or {}).items():
        config[f"{NAMESPACE}:{key}"] = value
        secret_keys.append(f"{NAMESPACE}:{key}")
    return run(stack, config, secret_keys, main, reveal=reveal)
