"""Apply a synthesized stack to the real Docker engine the way `pulumi up` and the real providers would.

`pulumi up` cannot run where the integration tests run (no Pulumi CLI, no state backend), so this
module takes the resources `tools.synth.synth_stack(..., reveal=True)` captured and plays the engine:

- **State.** After each create it stores what the provider's Read makes of the object (a container's
  `docker inspect` through `stacks.provider_rules.container_state`), in a `State` per stack.
- **Plan.** A later `apply` diffs the new inputs against that state with the providers' rules
  (`tests/integration/plan.py`), prints the plan as `pulumi preview --diff` lists it, and keeps it
  in `Applied.plan`.
- **Carry out.** Containers are replaced delete-first (dependents the replacement replaces, such as a
  worker's gateway membership, deleted before them), other resources create-first; an in-place update
  is one ContainerUpdate on the same container id; a state-only change touches nothing. Commands
  follow pulumi-command: `/bin/sh -c`, an update re-runs `create` when there is no `update`,
  `triggers` replace, the old command's stored `delete` runs at the end, `depends_on` re-runs nothing.

Every input of every applied resource must have a mapping here: an unknown input raises
`UnmappedInputError` naming it, so a new program input can never be silently dropped.
Everything created carries the label `inference-stack.test=integration`; `teardown()` removes the
labelled containers (with their anonymous volumes) and networks. Named volumes survive a teardown,
as they survive a `pulumi destroy` of the containers; `purge_volumes()` removes them.

The parts, each importing only those above it: `errors`; `engine` (the Engine API client);
`kinds` (resource types); `inputs` (the input mapper); `state` (state, plan, read-back);
`commands` (pulumi-command emulated); `containers`; `runner` (`apply` and the clean-ups);
`seeding` (images and the model cache). This package is their facade: tests import it.
"""

from __future__ import annotations

from tests.integration.harness.commands import (
    GATE,
    MEMBER,
    RELOAD,
    Context,
    check_command,
    command_step,
    host_command_target,
    is_gate,
)
from tests.integration.harness.containers import (
    RUNNING_TIMEOUT,
    container_step,
    delete_container,
    own,
    remove_container,
)
from tests.integration.harness.engine import (
    GRACE_LABEL,
    HARNESS_LABELS,
    REPO,
    RESOURCE_LABEL,
    SOCKET,
    TEST_LABEL,
    TEST_VALUE,
    api,
    api_version,
    get_or_none,
    inspect,
    labelled,
    logs_tail,
)
from tests.integration.harness.errors import (
    EngineError,
    GateFailedError,
    HarnessError,
    UnknownResourceTypeError,
    UnmappedInputError,
)
from tests.integration.harness.inputs import (
    DEFAULT_WAIT_TIMEOUT,
    Inputs,
    duration_ns,
    image_build,
    mock_repo_digest,
    network_body,
    plan_container,
    volume_body,
)
from tests.integration.harness.kinds import CONTAINER, IMAGE, NETWORK, SKIPPED_PREFIXES, VOLUME, check_type
from tests.integration.harness.runner import apply, destroy, purge_volumes, teardown
from tests.integration.harness.seeding import PINNED_VLLM, ensure_stack_images, seed_model_cache
from tests.integration.harness.state import (
    STATE,
    UPDATE_FIELDS,
    Applied,
    Entry,
    State,
    build_plan,
    predicted_state,
    readback,
    resolved,
    written,
)

__all__ = [
    "CONTAINER",
    "DEFAULT_WAIT_TIMEOUT",
    "GATE",
    "GRACE_LABEL",
    "HARNESS_LABELS",
    "IMAGE",
    "MEMBER",
    "NETWORK",
    "PINNED_VLLM",
    "RELOAD",
    "REPO",
    "RESOURCE_LABEL",
    "RUNNING_TIMEOUT",
    "SKIPPED_PREFIXES",
    "SOCKET",
    "STATE",
    "TEST_LABEL",
    "TEST_VALUE",
    "UPDATE_FIELDS",
    "VOLUME",
    "Applied",
    "Context",
    "EngineError",
    "Entry",
    "GateFailedError",
    "HarnessError",
    "Inputs",
    "State",
    "UnknownResourceTypeError",
    "UnmappedInputError",
    "api",
    "api_version",
    "apply",
    "build_plan",
    "check_command",
    "check_type",
    "command_step",
    "container_step",
    "delete_container",
    "destroy",
    "duration_ns",
    "ensure_stack_images",
    "get_or_none",
    "host_command_target",
    "image_build",
    "inspect",
    "is_gate",
    "labelled",
    "logs_tail",
    "mock_repo_digest",
    "network_body",
    "own",
    "plan_container",
    "predicted_state",
    "purge_volumes",
    "readback",
    "remove_container",
    "resolved",
    "seed_model_cache",
    "teardown",
    "volume_body",
    "written",
]
