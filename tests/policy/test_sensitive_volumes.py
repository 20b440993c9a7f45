"""`no-sensitive-host-mounts` follows a container's named volumes to their Volume resources: a
`local` volume whose `driverOpts.device` binds a sensitive host path (as components/hosts/host.py
binds the model cache) is refused like a bind mount of it, and the shipped stacks pass."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pulumi_policy import PolicyCustomTimeouts, PolicyResource, PolicyResourceOptions, StackValidationArgs
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from policy.hardening import HARDENING_STACK_POLICIES
from stacks.host_paths import BROAD_DIRS, SYSTEM_ROOTS, host_path_problem, sensitive_root
from tests.policy.support import mutated, new_findings
from tools.policy_run import evaluate, load_config
from tools.synth import Synth, synth_stack

POLICY = "no-sensitive-host-mounts"
CACHE = "local-model-cache"
WORKERS = ["chat-local-0", "chat-local-1", "chat-local-2"]


@pytest.fixture(scope="module")
def ci() -> Synth:
    return synth_stack("ci")


def device(path: str, **opts: str) -> Any:
    return lambda i: i.update(driverOpts={**i["driverOpts"], "device": path, **opts})


def found(broken: Synth, baseline: Synth) -> list[tuple[str, str, str | None, str]]:
    return sorted((f.policy, f.enforcement, f.resource, f.message) for f in new_findings(broken, baseline))


SENSITIVE_DEVICES = [
    "/",
    "/etc",
    "/etc/",
    "/var/run",
    "/run/containerd",
    "/proc/1/root",
    "/sys/fs",
    "/boot",
    "/usr/lib",
    "/lib64",
    "/root/.ssh",
    "/var/lib/docker/volumes",
    "/var/lib/containerd",
    "/dev/sdb1",
    "/home",
    "/tmp",
    "/var",
    "//etc",
    "/data/../etc",
]


@pytest.mark.parametrize("path", SENSITIVE_DEVICES)
def test_a_volume_bound_to_a_sensitive_path_is_refused_for_every_container_mounting_it(path: str, ci: Synth) -> None:
    broken = mutated(ci, CACHE, device(path))
    message = f"volume {CACHE} binds {path}, a sensitive host path: bind a dedicated directory instead"
    assert found(broken, ci) == [(POLICY, "mandatory", worker, message) for worker in WORKERS]


def test_a_volume_bound_to_the_docker_socket_is_refused(ci: Synth) -> None:
    broken = mutated(ci, CACHE, device("/var/lib/inference-stack/docker.sock"))
    message = (
        f"volume {CACHE} binds /var/lib/inference-stack/docker.sock: the Docker socket is root on the host; "
        "never mount it"
    )
    assert found(broken, ci) == [(POLICY, "mandatory", worker, message) for worker in WORKERS]


def test_a_volume_named_in_the_containers_volumes_list_is_followed_too(ci: Synth) -> None:
    broken = mutated(ci, CACHE, device("/etc"))
    container = broken.named("redis")
    assert container["type"] == "docker:index/container:Container"
    container["inputs"]["volumes"] = [{"volumeName": CACHE, "containerPath": "/x"}]
    assert ("redis", f"volume {CACHE} binds /etc, a sensitive host path: bind a dedicated directory instead") in [
        (r, m) for _, _, r, m in found(broken, ci)
    ]


@pytest.mark.parametrize(
    "change",
    [
        device("/srv/models"),
        device("/var/lib/inference-stack/model-cache"),
        device("/etcetera/models"),
        # NFS and CIFS devices are not host paths.
        device(":/exports/models", type="nfs", o="addr=10.0.0.2"),
        device("//fileserver/models", type="cifs"),
        lambda i: i.update(driver="rexray/ebs", driverOpts={"device": "/dev/xvdf"}),
    ],
    ids=["srv", "var-lib-app", "etcetera", "nfs", "cifs", "other-driver"],
)
def test_a_dedicated_or_remote_device_passes(change: Any, ci: Synth) -> None:
    assert found(mutated(ci, CACHE, change), ci) == []


def test_an_unmounted_sensitive_volume_is_not_a_container_finding(ci: Synth) -> None:
    broken = copy.deepcopy(ci)
    for worker in WORKERS:
        broken.named(worker)["inputs"]["mounts"] = []
    baseline = copy.deepcopy(broken)
    broken.named(CACHE)["inputs"]["driverOpts"]["device"] = "/etc"
    assert [f for f in evaluate(broken, {}) if f.policy == POLICY] == []
    assert found(broken, baseline) == []


def resource(kind: str, name: str, props: dict[str, Any], deps: dict[str, list[PolicyResource]]) -> PolicyResource:
    options = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
    urn = f"urn:pulumi:test::inference-stack::{kind}::{name}"
    return PolicyResource(kind, unknown_checking_proxy(props), urn, name, options, None, None, [], deps)


def run_policy(resources: list[PolicyResource]) -> list[tuple[str | None, str]]:
    policy = next(p for p in HARDENING_STACK_POLICIES if p.name == POLICY)
    out: list[tuple[str | None, str]] = []

    def report(message: str, urn: str | None = None) -> None:
        out.append((urn, message))

    policy.validate(StackValidationArgs(resources, {}), report)
    return out


def test_a_volume_the_engine_names_is_found_through_the_mounts_dependency() -> None:
    """In a real preview the engine names the volume, so the container's mount source is a name
    the program never saw; the analyzer's property dependencies still tie the two."""
    volume = resource(
        "docker:index/volume:Volume",
        "cache",
        {"driver": "local", "driverOpts": {"type": "none", "o": "bind", "device": "/etc"}, "name": "9f2c1e"},
        {},
    )
    container = resource(
        "docker:index/container:Container",
        "worker",
        {"mounts": [{"type": "volume", "source": UNKNOWN_STRING_VALUE, "target": "/data"}]},
        {"mounts": [volume]},
    )
    assert run_policy([volume, container]) == [
        (container.urn, "volume cache binds /etc, a sensitive host path: bind a dedicated directory instead")
    ]


def test_unknown_values_skip_one_container_and_judge_the_others() -> None:
    volume = resource("docker:index/volume:Volume", "v", {"name": UNKNOWN_STRING_VALUE}, {})
    unknown = resource("docker:index/container:Container", "a", {"mounts": UNKNOWN_STRING_VALUE}, {})
    bad = resource(
        "docker:index/container:Container", "b", {"mounts": [{"type": "bind", "source": "/root", "target": "/r"}]}, {}
    )
    assert run_policy([volume, unknown, bad]) == [
        (bad.urn, "/root is a sensitive host path: mount a dedicated directory instead")
    ]


@pytest.mark.parametrize("stack", ["dev", "prod", "ci"])
def test_the_shipped_stacks_pass(stack: str) -> None:
    findings = evaluate(synth_stack(stack), load_config(stack))
    assert [f for f in findings if f.policy == POLICY] == []


@pytest.mark.parametrize("path", [*SYSTEM_ROOTS, *BROAD_DIRS, "/"])
def test_the_policy_and_the_config_rule_refuse_the_same_places(path: str) -> None:
    assert sensitive_root(path) is not None
    assert host_path_problem(path) is not None
