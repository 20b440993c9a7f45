"""Every branch of the hardening policies and the utilization ceiling, one fixture each, with the
exact finding: a check that is switched off, or a key dropped from one of its lists, fails here."""

from __future__ import annotations

import json
from typing import Any

import pytest

from policy.checklist import flag, seconds
from policy.pack import POLICIES
from tests.policy.support import WORKER, labels_set, mutated, new_findings
from tools.policy_run import Finding
from tools.synth import Synth, synth_stack


@pytest.fixture(scope="module")
def ci() -> Synth:
    return synth_stack("ci")


def only(findings: list[Finding]) -> tuple[str, str, str | None, str]:
    assert len(findings) == 1, findings
    f = findings[0]
    return f.policy, f.enforcement, f.resource, f.message


def test_mapped_host_devices_are_refused(ci: Synth) -> None:
    device = {"hostPath": "/dev/nvidia0", "containerPath": "/dev/nvidia0", "permissions": "rwm"}
    broken = mutated(ci, "redis", lambda i: i.update(devices=[device]))
    assert only(new_findings(broken, ci)) == (
        "not-privileged",
        "mandatory",
        "redis",
        "`devices` maps host devices in: request GPUs through deviceRequests instead",
    )


# Every namespace input pulumi-docker 5.2.0's Container has (it has none for UTS).
@pytest.mark.parametrize("key", ["networkMode", "pidMode", "ipcMode", "usernsMode", "cgroupnsMode"])
def test_each_host_namespace_is_refused(key: str, ci: Synth) -> None:
    broken = mutated(ci, "redis", lambda i: i.update({key: "host"}))
    assert only(new_findings(broken, ci)) == (
        "no-host-namespaces",
        "mandatory",
        "redis",
        f"{key}: host shares the host's namespace with the container: remove it",
    )


@pytest.mark.parametrize("mode", ["private", "shareable", "container:ci-redis", ""])
def test_a_namespace_of_its_own_or_another_container_passes(mode: str, ci: Synth) -> None:
    broken = mutated(ci, "redis", lambda i: i.update(pidMode=mode, ipcMode=mode))
    assert new_findings(broken, ci) == []


def bind(source: str) -> Any:
    return lambda i: i["mounts"].append({"type": "bind", "source": source, "target": "/mnt/x"})


def host_volume(source: str) -> Any:
    return lambda i: i.update(volumes=[{"hostPath": source, "containerPath": "/mnt/x"}])


# Each path class the policy's description lists (/ and these seven), itself, with a trailing slash
# and below it, as a bind mount and as a host-path volume (the provider's two ways to map a host path).
PATH_CLASSES = ("/etc", "/proc", "/sys", "/boot", "/dev", "/usr", "/lib")
SENSITIVE_SOURCES = ["/", "//", *(f"{p}{tail}" for p in PATH_CLASSES for tail in ("", "/", "/x"))]


@pytest.mark.parametrize("how", [bind, host_volume], ids=["bind", "volume"])
@pytest.mark.parametrize("source", SENSITIVE_SOURCES)
def test_each_sensitive_host_path_is_refused(source: str, how: Any, ci: Synth) -> None:
    broken = mutated(ci, "redis", how(source))
    assert only(new_findings(broken, ci)) == (
        "no-sensitive-host-mounts",
        "mandatory",
        "redis",
        f"{source} is a sensitive host path: mount a dedicated directory instead",
    )


@pytest.mark.parametrize("source", ["/var/run/docker.sock", "/run/docker.sock", "/home/u/.docker/run/docker.sock"])
def test_the_docker_socket_is_refused(source: str, ci: Synth) -> None:
    broken = mutated(ci, "redis", bind(source))
    assert only(new_findings(broken, ci)) == (
        "no-sensitive-host-mounts",
        "mandatory",
        "redis",
        f"{source}: the Docker socket is root on the host; never mount it",
    )


@pytest.mark.parametrize("source", ["/etcetera", "/usr-local", "/library", "/srv/models", "/var/lib/inference-stack"])
def test_a_dedicated_directory_passes(source: str, ci: Synth) -> None:
    assert new_findings(mutated(ci, "redis", bind(source)), ci) == []


def test_a_named_volume_called_like_a_sensitive_path_passes(ci: Synth) -> None:
    broken = mutated(ci, "redis", lambda i: i["mounts"].append({"type": "volume", "source": "/etc", "target": "/x"}))
    assert new_findings(broken, ci) == []


@pytest.mark.parametrize(
    "option", ["seccomp=unconfined", "seccomp:unconfined", "apparmor=unconfined", "apparmor:unconfined"]
)
def test_an_unconfined_profile_is_refused(option: str, ci: Synth) -> None:
    broken = mutated(ci, "redis", lambda i: i.update(securityOpts=[*i["securityOpts"], option]))
    assert only(new_findings(broken, ci)) == (
        "no-new-privileges",
        "mandatory",
        "redis",
        f"securityOpts {option}: keep Docker's default profile",
    )


def test_a_named_profile_passes(ci: Synth) -> None:
    options = ["seccomp=/etc/docker/seccomp/vllm.json", "apparmor=docker-default"]
    broken = mutated(ci, "redis", lambda i: i.update(securityOpts=[*i["securityOpts"], *options]))
    assert new_findings(broken, ci) == []


def utilization(value: str, separate: bool = True) -> Any:
    """The ci worker as a GPU worker started with `--gpu-memory-utilization <value>`."""

    def change(inputs: dict[str, Any]) -> None:
        labels_set(inputs, "inference-stack.accelerator", "nvidia")
        flag = ["--gpu-memory-utilization", value] if separate else [f"--gpu-memory-utilization={value}"]
        inputs["command"] = [*inputs["command"], *flag]

    return change


@pytest.mark.parametrize("separate", [True, False], ids=["two-words", "equals"])
@pytest.mark.parametrize("value", ["0.90", "0.9", "0.5"])
def test_utilization_up_to_the_ceiling_passes_the_policy(value: str, separate: bool, ci: Synth) -> None:
    assert new_findings(mutated(ci, WORKER, utilization(value, separate)), ci) == []


@pytest.mark.parametrize("separate", [True, False], ids=["two-words", "equals"])
@pytest.mark.parametrize("value", ["0.91", "0.901", "0.95"])
def test_utilization_above_the_ceiling_fails_the_policy(value: str, separate: bool, ci: Synth) -> None:
    assert only(new_findings(mutated(ci, WORKER, utilization(value, separate)), ci)) == (
        "gpu-memory-utilization-cli",
        "mandatory",
        WORKER,
        f"--gpu-memory-utilization {value} is above 0.9: lower gpuMemoryUtilization",
    )


def test_a_gpu_worker_without_the_flag_fails_the_policy(ci: Synth) -> None:
    broken = mutated(ci, WORKER, lambda i: labels_set(i, "inference-stack.accelerator", "nvidia"))
    assert only(new_findings(broken, ci)) == (
        "gpu-memory-utilization-cli",
        "mandatory",
        WORKER,
        "`--gpu-memory-utilization` is not on the command line: set workers[].gpuMemoryUtilization",
    )


@pytest.mark.parametrize(
    ("duration", "expected"),
    [("90s", 90), ("2m", 120), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600), ("1.5s", 1.5), ("1h1m1s", 3661)],
)
def test_docker_durations_parse_to_seconds(duration: str, expected: float) -> None:
    assert seconds(duration) == expected


@pytest.mark.parametrize("duration", ["", "90", "s", "1x", "90 s", "1m30", "-5s", "1.5.0s"])
def test_anything_else_is_not_a_duration(duration: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        seconds(duration)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["--port", "8000"], "8000"),
        (["--port=8000"], "8000"),
        (["--api-key=a=b"], None),
        (["--port"], None),
        (["8000", "--port"], None),
        (["--ports", "1", "--port-x=2"], None),
    ],
)
def test_a_flag_value_is_read_from_either_spelling(command: list[str], expected: str | None) -> None:
    assert flag(command, "--port") == expected


def test_a_flag_value_keeps_its_own_equals_signs() -> None:
    assert flag(["--api-key=a=b=c"], "--api-key") == "a=b=c"


def test_a_worker_without_its_cold_start_label_fails(ci: Synth) -> None:
    def drop(inputs: dict[str, Any]) -> None:
        inputs["labels"] = [i for i in inputs["labels"] if i["label"] != "inference-stack.cold-start-seconds"]

    assert only(new_findings(mutated(ci, WORKER, drop), ci)) == (
        "health-start-period-covers-cold-start",
        "mandatory",
        WORKER,
        "label `inference-stack.cold-start-seconds` is missing: declare the worker's cold start",
    )


def test_a_worker_without_a_start_period_fails(ci: Synth) -> None:
    assert only(new_findings(mutated(ci, WORKER, lambda i: i["healthcheck"].pop("startPeriod")), ci)) == (
        "health-start-period-covers-cold-start",
        "mandatory",
        WORKER,
        "healthcheck startPeriod 0s is under 2x the declared cold start (120s): set health.startPeriodSeconds to at "
        "least 240",
    )


@pytest.mark.parametrize(
    "entry", [{}, {"enforcementLevel": "mandatory"}, {"justification": "reviewed"}], ids=["empty", "mandatory", "why"]
)
def test_a_mandatory_policy_needs_no_justification(entry: dict[str, str], tmp_path: Any, monkeypatch: Any) -> None:
    import tools.policy_run as run

    monkeypatch.setattr(run, "CONFIG_DIR", tmp_path)
    (tmp_path / "x.json").write_text(json.dumps({"cpu-and-memory-limits": entry}))
    assert run.load_config("x") == {"cpu-and-memory-limits": entry}


def test_an_unknown_policy_name_lists_the_real_ones(tmp_path: Any, monkeypatch: Any) -> None:
    import tools.policy_run as run

    monkeypatch.setattr(run, "CONFIG_DIR", tmp_path)
    (tmp_path / "x.json").write_text('{"cpu-limits": {}}')
    names = ", ".join(sorted(p.name for p in POLICIES))
    with pytest.raises(ValueError) as caught:
        run.load_config("x")
    assert str(caught.value) == f"{tmp_path / 'x.json'}: no policy named 'cpu-limits' (policies: {names})"


@pytest.mark.parametrize("ip", [None, "", "0.0.0.0", "::"])
def test_a_port_on_every_interface_is_refused(ip: str | None, ci: Synth) -> None:
    def publish(inputs: dict[str, Any]) -> None:
        port = {"internal": 8080, "external": 18080, **({} if ip is None else {"ip": ip})}
        inputs["ports"] = [port]

    findings = [
        f
        for f in new_findings(mutated(ci, "gateway-nginx", publish), ci)
        if f.policy == "ports-bind-a-specific-address"
    ]
    assert [(f.enforcement, f.resource, f.message) for f in findings] == [
        ("mandatory", "gateway-nginx", "port 18080 publishes on every interface: bind it to a specific address")
    ]


@pytest.mark.parametrize(
    "image",
    [
        "redis@sha256:" + "a" * 64,
        "registry.internal:5000/team/redis@sha256:" + "b" * 64,
        "sha256:" + "c" * 64,
        "registry.internal:5000/team/redis:7.4.9",
    ],
)
def test_an_image_pinned_by_digest_or_tag_passes(image: str, ci: Synth) -> None:
    assert new_findings(mutated(ci, "redis", lambda i: i.update(image=image)), ci) == []


@pytest.mark.parametrize("image", ["redis", "redis:latest", "registry.internal:5000/team/redis", "a/b:latest"])
def test_an_unpinned_image_is_refused(image: str, ci: Synth) -> None:
    assert only(new_findings(mutated(ci, "redis", lambda i: i.update(image=image)), ci)) == (
        "image-tag-pinned",
        "mandatory",
        "redis",
        f"image {image!r} is not pinned: use an explicit version tag or a digest",
    )
