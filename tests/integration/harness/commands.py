"""pulumi-command emulated: the local run (`/bin/sh -c` with the provider's environment), the
host commands the harness runs against its own containers (gateway membership, reloads, the
canary gate), and each command's create, update, replace and stored delete."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from components.gateway import members
from tests.integration import plan as plan_mod
from tests.integration.harness.errors import GateFailedError, HarnessError
from tests.integration.harness.inputs import Inputs
from tests.integration.harness.state import Applied, Entry, State

# The host commands the harness runs, both only against a container the harness created: the
# gateway reload (a signal) and the gateway-membership commands (members.sh in the gateway).
RELOAD = re.compile(r"^docker kill --signal HUP ([A-Za-z0-9][A-Za-z0-9_.-]*)$")
MEMBER = re.compile(
    r"^docker exec ([A-Za-z0-9][A-Za-z0-9_.-]*) sh " + re.escape(members.SCRIPT_PATH) + " (admit|split|promote) "
)
# The canary gate: a program on stdin, run on the gateway host (here: this machine).
GATE = "python3 -"


@dataclass
class Context:
    state: State
    applied: Applied
    plan: plan_mod.Plan
    supported: bool
    uploads: str
    at_end: list[Callable[[], None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(
        self, name: str, phase: str, command: str, stdin: str | None = None, previous: Entry | None = None
    ) -> subprocess.CompletedProcess[str]:
        """pulumi-command's local run: `/bin/sh -c <command>` with the provider's environment, and
        the previous outputs in PULUMI_COMMAND_STDOUT/STDERR (addPreviousOutputInEnv, on by default)."""
        env = dict(os.environ)
        if previous is not None:
            env.update({"PULUMI_COMMAND_STDOUT": previous.stdout, "PULUMI_COMMAND_STDERR": previous.stderr})
        with self.lock:
            self.applied.commands_run.append(f"{name} {phase}")
        return subprocess.run(
            ["/bin/sh", "-c", command], input=stdin, env=env, capture_output=True, text=True, timeout=900
        )

    def delete_command(self, name: str) -> None:
        """Runs a command's `delete` as stored in state, and drops it from the state."""
        entry = self.state.entries.pop(name, None)
        if entry is not None:
            self.run_delete(name, entry)

    def run_delete(self, name: str, entry: Entry) -> None:
        """pulumi-command's delete: the `delete` in the command's stored state, if it has one."""
        delete = entry.inputs.get("delete")
        if delete:
            ran = self.run(name, "delete", str(delete), previous=entry)
            if ran.returncode != 0:
                raise HarnessError(f"{name} delete: {delete!r} exited {ran.returncode}: {ran.stderr.strip()}")


def command_step(res: dict[str, Any], step: plan_mod.Step, ctx: Context, inputs: dict[str, Any]) -> None:
    name, applied = res["name"], ctx.applied
    target = host_command_target(res)
    if target is not None and target not in applied.names.values():
        raise HarnessError(f"{name}: runs in {target}, which the harness did not create")
    previous = ctx.state.entries.get(name)
    if step.op == "same":
        applied.actions[name] = "kept"
        return
    if step.op == "replace" and previous is not None:
        # Create-before-replace: the new one runs now, the old one's stored delete at the end.
        ctx.state.entries.pop(name)
        old = previous
        ctx.at_end.append(lambda: ctx.run_delete(name, old))
    command = str(inputs.get("create"))
    phase = "create"
    if step.op == "update":
        update = inputs.get("update")
        command, phase = (str(update), "update") if update else (command, "create")
    started = time.monotonic()
    ran = ctx.run(name, phase, command, stdin=inputs.get("stdin"), previous=previous if step.op == "update" else None)
    if is_gate(res):
        applied.seconds[name] = round(time.monotonic() - started, 1)
        report = (ran.stdout + ran.stderr).strip()
        applied.reports[name] = report
        if ran.returncode != 0:
            raise GateFailedError(f"{name}: the canary gate failed:\n{report}", report)
    elif ran.returncode != 0:
        raise HarnessError(f"{name}: {command!r} exited {ran.returncode}: {ran.stderr.strip()}")
    ctx.state.entries[name] = Entry(res["type"], inputs, uuid.uuid4().hex, ran.stdout, ran.stderr)
    applied.actions[name] = "ran"


def check_command(res: dict[str, Any]) -> None:
    inputs = Inputs(f"{res['name']} ({res['type']})", res["inputs"])
    for key in ("create", "delete", "update", "triggers", "stdin"):
        inputs.get(key)
    inputs.done()


def _member_target(res: dict[str, Any]) -> str | None:
    """The gateway a member command (or the gateway's readmit, a `sh -c` of several) runs in."""
    create = str(res["inputs"].get("create", ""))
    match = MEMBER.match(create)
    if match:
        return match.group(1)
    words = shlex.split(create)
    if words[:2] == ["sh", "-c"] and len(words) == 4:
        found = {m.group(1) if (m := MEMBER.match(part.strip())) else None for part in words[2].split("&&")}
        if len(found) == 1 and None not in found:
            return found.pop()
    return None


def _reload_target(res: dict[str, Any]) -> str | None:
    match = RELOAD.match(str(res["inputs"].get("create", "")))
    return match.group(1) if match else None


def host_command_target(res: dict[str, Any]) -> str | None:
    return _reload_target(res) or _member_target(res)


def is_gate(res: dict[str, Any]) -> bool:
    return res["type"] == "command:local:Command" and res["inputs"].get("create") == GATE
