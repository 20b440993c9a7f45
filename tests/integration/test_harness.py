"""The harness that stands in for `pulumi up`: its input mapping, checked against `docker inspect`.

A stack test can only trust what the harness created if every input reached the engine as the
provider would send it, so each mapped input kind is compared field by field here, on small
containers from the Debian base image (seconds, not the minutes of the vLLM stack).
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import harness
from tests.support.docker_engine import require_engine
from tools.synth import Synth

pytestmark = pytest.mark.integration

BASE = "inference-stack-ci/debian:bookworm"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def base_image() -> str:
    require_engine()
    if harness.get_or_none(f"/images/{BASE.replace('/', '%2F')}/json") is None:
        from tests.integration.images import BASE_IMAGE, ensure_images

        ensure_images({"base": BASE_IMAGE})
    return BASE


class _Cleanup:
    """Removes what one test applied, and only that: a stack test may share the engine."""

    def __init__(self) -> None:
        self.applied: list[harness.Applied] = []
        self.volumes: list[str] = []
        self.state = harness.State()
        """This test's own stack: its applies never plan against the ci stack's state."""

    def run(self) -> None:
        # One merged teardown: containers first, then networks (a replaced container's network is
        # still in use by its replacement until both are gone).
        merged = harness.Applied()
        for applied in self.applied:
            merged.containers.update({f"{k}-{v}": v for k, v in applied.containers.items()})
            merged.networks.update(applied.networks)
        harness.teardown(only=merged, state=self.state)
        for volume in self.volumes:
            harness.api("DELETE", f"/volumes/{volume}", ok=(204, 404))


@pytest.fixture
def cleanup() -> Iterator[_Cleanup]:
    state = _Cleanup()
    yield state
    state.run()


def _synth(resources: list[dict[str, Any]], depends: dict[str, set[str]] | None = None) -> Synth:
    return Synth(resources, depends or {})


def _mapping_resources(suffix: str, image: str, host_dir: Path, port: int) -> list[dict[str, Any]]:
    network = {
        "type": harness.NETWORK,
        "name": "net",
        "parent": None,
        "inputs": {
            "name": f"it-net-{suffix}",
            "driver": "bridge",
            "internal": True,
            "labels": [{"label": "role", "value": "test"}],
        },
    }
    edge = {
        "type": harness.NETWORK,
        "name": "edge",
        "parent": None,
        "inputs": {"name": f"it-edge-{suffix}", "driver": "bridge"},
    }
    volume = {
        "type": harness.VOLUME,
        "name": "data",
        "parent": None,
        "inputs": {"name": f"it-data-{suffix}", "labels": [{"label": "role", "value": "data"}]},
    }
    container = {
        "type": harness.CONTAINER,
        "name": "probe",
        "parent": None,
        "inputs": {
            "name": f"it-probe-{suffix}",
            "image": image,
            "entrypoints": ["/bin/sh", "-c"],
            "command": ["trap 'echo hup' HUP; while :; do sleep 1; done"],
            "envs": ["A=1", "B=two words"],
            "hostname": f"probe-{suffix}",
            "user": "0:0",
            "labels": [{"label": "inference-stack.role", "value": "probe"}],
            "mounts": [
                {"type": "volume", "source": f"it-data-{suffix}", "target": "/data"},
                {"type": "bind", "source": str(host_dir), "target": "/host", "readOnly": True},
            ],
            "volumes": [
                {"containerPath": "/secrets"},
                {"hostPath": str(host_dir), "containerPath": "/host-v", "readOnly": True},
            ],
            "tmpfs": {"/tmp": "rw,size=16m"},
            "uploads": [
                {"file": "/secrets/token", "content": "s3cret", "permissions": "0400", "owner": "999"},
                {"file": "/secrets/sub/run.sh", "contentBase64": "IyEvYmluL3NoCg==", "executable": True},
            ],
            # The port is published through the edge network: Docker publishes none on an internal one.
            "networksAdvanced": [
                {"name": f"it-edge-{suffix}"},
                {"name": f"it-net-{suffix}", "aliases": ["probe-alias"]},
            ],
            "ports": [{"internal": 8080, "external": port, "ip": "127.0.0.1", "protocol": "tcp"}],
            "healthcheck": {
                "tests": ["CMD", "test", "-f", "/secrets/token"],
                "interval": "1s",
                "timeout": "2s",
                "startPeriod": "1m30s",
                "retries": 2,
            },
            "memory": 64,
            "memorySwap": 64,
            "memoryReservation": 32,
            "cpus": "0.5",
            "cpuShares": 256,
            "shmSize": 16,
            "restart": "on-failure",
            "maxRetryCount": 3,
            "logDriver": "json-file",
            "logOpts": {"max-size": "1m", "max-file": "2"},
            "readOnly": True,
            "stopSignal": "SIGINT",
            "stopTimeout": 7,
            "capabilities": {"adds": ["NET_ADMIN"], "drops": ["MKNOD"]},
            "securityOpts": ["no-new-privileges:true"],
            "wait": True,
            "waitTimeout": 60,
            "destroyGraceSeconds": 5,
        },
    }
    reload = {
        "type": "command:local:Command",
        "name": "probe-reload",
        "parent": None,
        "inputs": {"create": f"docker kill --signal HUP it-probe-{suffix}", "triggers": ["probe-id"]},
    }
    skipped: list[dict[str, Any]] = [
        {"type": "random:index/randomPassword:RandomPassword", "name": "pw", "parent": None, "inputs": {}},
        {"type": "command:remote:Command", "name": "host-step", "parent": None, "inputs": {"create": "true"}},
        {"type": "pulumi:providers:docker", "name": "prov", "parent": None, "inputs": {}},
        {"type": "inference-stack:gateway:Gateway", "name": "comp", "parent": None, "inputs": {}},
    ]
    return [network, edge, volume, container, reload, *skipped]


def _apply_probe(tmp_path: Path, base_image: str, cleanup: _Cleanup) -> tuple[harness.Applied, Synth, dict[str, Any]]:
    suffix = uuid.uuid4().hex[:8]
    port = _free_port()
    (tmp_path / "hello").write_text("hello")
    resources = _mapping_resources(suffix, base_image, tmp_path, port)
    synth = _synth(resources, {"probe": {"net", "edge", "data"}, "probe-reload": {"probe"}})
    cleanup.volumes.append(f"it-data-{suffix}")
    applied = harness.apply(synth, uploads="into-volumes", state=cleanup.state)
    cleanup.applied.append(applied)
    return applied, synth, resources[3]["inputs"]


def _exec(container: str, *argv: str) -> str:
    result = subprocess.run(["docker", "exec", container, *argv], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_every_mapped_input_reaches_docker(tmp_path: Path, base_image: str, cleanup: _Cleanup) -> None:
    applied, _, spec = _apply_probe(tmp_path, base_image, cleanup)
    info = applied.inspect("probe")
    config, host = info["Config"], info["HostConfig"]
    mb = 1024 * 1024

    assert info["Name"] == "/" + spec["name"]
    assert info["State"]["Health"]["Status"] == "healthy"
    assert config["Image"] == base_image
    assert config["Entrypoint"] == spec["entrypoints"]
    assert config["Cmd"] == spec["command"]
    assert set(spec["envs"]) <= set(config["Env"])
    assert config["Hostname"] == spec["hostname"]
    assert config["User"] == "0:0"
    assert config["Labels"]["inference-stack.role"] == "probe"
    assert config["Labels"][harness.TEST_LABEL] == harness.TEST_VALUE
    assert config["Labels"][harness.GRACE_LABEL] == "5"
    assert config["StopSignal"] == "SIGINT"
    assert config["StopTimeout"] == 7
    assert config["Healthcheck"] == {
        "Test": spec["healthcheck"]["tests"],
        "Interval": 1_000_000_000,
        "Timeout": 2_000_000_000,
        "StartPeriod": 90_000_000_000,
        "Retries": 2,
    }
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["Volumes"] == {"/secrets": {}}

    assert host["Memory"] == 64 * mb
    assert host["MemoryReservation"] == 32 * mb
    assert host["NanoCpus"] == 500_000_000
    assert host["CpuShares"] == 256
    assert host["ShmSize"] == 16 * mb
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/tmp": "rw,size=16m"}
    assert host["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(spec["ports"][0]["external"])}]
    }
    assert host["CapAdd"] == ["NET_ADMIN"]
    assert host["CapDrop"] == ["MKNOD"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["Binds"] == [f"{tmp_path}:/host-v:ro"]
    assert host["Mounts"] == [
        {"Type": "volume", "Source": spec["mounts"][0]["source"], "Target": "/data"},
        {"Type": "bind", "Source": str(tmp_path), "Target": "/host", "ReadOnly": True},
    ]
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/data"]["Name"] == spec["mounts"][0]["source"] and mounts["/data"]["RW"] is True
    assert mounts["/secrets"]["Type"] == "volume" and len(mounts["/secrets"]["Name"]) == 64  # anonymous
    assert mounts["/host"]["RW"] is False and mounts["/host-v"]["RW"] is False

    network = spec["networksAdvanced"][1]["name"]
    assert sorted(info["NetworkSettings"]["Networks"]) == sorted(n["name"] for n in spec["networksAdvanced"])
    assert "probe-alias" in info["NetworkSettings"]["Networks"][network]["Aliases"]
    net = harness.api("GET", f"/networks/{network}")
    assert net["Internal"] is True and net["Labels"]["role"] == "test"
    assert net["Labels"][harness.TEST_LABEL] == harness.TEST_VALUE
    vol = harness.api("GET", f"/volumes/{spec['mounts'][0]['source']}")
    assert vol["Labels"]["role"] == "data" and vol["Labels"][harness.TEST_LABEL] == harness.TEST_VALUE

    # Uploads: mode and owner as given, executable -> 0744, parent directories created.
    name = spec["name"]
    assert _exec(name, "stat", "-c", "%a %u %g", "/secrets/token") == "400 999 0"
    assert _exec(name, "cat", "/secrets/token") == "s3cret"
    assert _exec(name, "stat", "-c", "%a %u", "/secrets/sub/run.sh") == "744 0"
    assert _exec(name, "cat", "/host/hello") == "hello"
    assert _exec(name, "sh", "-c", "touch /x 2>&1 || true").endswith("Read-only file system")

    assert applied.url("probe", 8080) == f"http://127.0.0.1:{spec['ports'][0]['external']}"
    address = info["NetworkSettings"]["Networks"][network]["IPAddress"]
    assert applied.url("probe", 9000, network=network) == f"http://{address}:9000"
    assert applied.actions["probe"] == "created" and applied.actions["probe-reload"] == "ran"
    assert set(applied.skipped) == {"pw", "host-step", "prov", "comp"}
    assert "host provisioning" in applied.skipped["host-step"]


def test_provider_uploads_are_refused_on_a_read_only_rootfs(tmp_path: Path, base_image: str, cleanup: _Cleanup) -> None:
    """The provider extracts uploads at /; Docker refuses that when readOnly is set, whichever volume
    the file lands in. The default mode reproduces the failure instead of hiding it."""
    suffix = uuid.uuid4().hex[:8]
    resources = _mapping_resources(suffix, base_image, tmp_path, _free_port())
    synth = _synth(resources[:4])
    cleanup.volumes.append(f"it-data-{suffix}")
    with pytest.raises(harness.HarnessError, match="container rootfs is marked read-only") as failure:
        harness.apply(synth, state=cleanup.state)
    assert failure.value.applied is not None
    cleanup.applied.append(failure.value.applied)
    # Created, never started: the upload comes before the start.
    assert failure.value.applied.inspect("probe")["State"]["Status"] == "created"


@pytest.mark.parametrize("where", ["top", "nested"])
def test_an_unmapped_input_raises_before_anything_is_created(
    where: str, tmp_path: Path, base_image: str, cleanup: _Cleanup
) -> None:
    suffix = uuid.uuid4().hex[:8]
    resources = _mapping_resources(suffix, base_image, tmp_path, _free_port())
    container = resources[3]["inputs"]
    if where == "top":
        container["frobnicate"] = True
    else:
        container["healthcheck"]["jitter"] = "1s"
    with pytest.raises(harness.UnmappedInputError, match="frobnicate" if where == "top" else r"healthcheck.*jitter"):
        harness.apply(_synth(resources), state=cleanup.state)
    assert harness.get_or_none(f"/networks/it-net-{suffix}") is None
    assert harness.get_or_none(f"/containers/it-probe-{suffix}/json") is None


def test_an_unknown_resource_type_raises(base_image: str) -> None:
    resources = [{"type": "docker:index/service:Service", "name": "swarm", "parent": None, "inputs": {"name": "x"}}]
    with pytest.raises(harness.UnknownResourceTypeError, match=r"swarm.*docker:index/service:Service"):
        harness.apply(_synth(resources), state=harness.State())


def test_gpu_requests_are_an_error(tmp_path: Path, base_image: str) -> None:
    resources = _mapping_resources(uuid.uuid4().hex[:8], base_image, tmp_path, _free_port())
    resources[3]["inputs"]["deviceRequests"] = [{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}]
    with pytest.raises(harness.HarnessError, match="GPUs"):
        harness.apply(_synth(resources), state=harness.State())


def _stable(info: dict[str, Any]) -> dict[str, Any]:
    """`docker inspect` without what changes on its own: State.Health.Log and ExecIDs move with every
    health probe, and Mounts comes from a Go map, in any order."""
    out = {k: v for k, v in info.items() if k not in ("State", "ExecIDs")}
    out["Mounts"] = sorted(info["Mounts"], key=lambda m: m["Destination"])
    return out


def test_applying_twice_changes_nothing(tmp_path: Path, base_image: str, cleanup: _Cleanup) -> None:
    applied, synth, _ = _apply_probe(tmp_path, base_image, cleanup)
    before = applied.inspect("probe")
    network_before = harness.api("GET", f"/networks/{applied.networks['net']}")

    again = harness.apply(synth, uploads="into-volumes", state=cleanup.state)
    cleanup.applied.append(again)
    after = again.inspect("probe")

    assert again.plan.changed() == {}, again.plan.render()
    assert again.commands_run == []
    assert again.containers == applied.containers
    assert again.networks == applied.networks
    assert again.actions["probe"] == "kept" and again.actions["probe-reload"] == "kept"
    # State.Health.Log and ExecIDs move with every health probe; the container itself must be untouched.
    assert _stable(after) == _stable(before)
    assert after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert after["RestartCount"] == 0
    network_after = harness.api("GET", f"/networks/{applied.networks['net']}")
    assert network_after["Created"] == network_before["Created"]

    # A changed input replaces the container (new id), as a changed ForceNew input does in `up`; the
    # command its id triggers is deleted before it (delete-before-replace) and created after.
    synth.resources[3]["inputs"]["envs"] = ["A=2"]
    changed = harness.apply(synth, uploads="into-volumes", state=cleanup.state)
    cleanup.applied.append(changed)
    assert changed.plan.changed() == {"probe": "replace", "probe-reload": "replace"}, changed.plan.render()
    assert changed.plan.steps["probe-reload"].deleted_before == ["probe"]
    assert changed.actions["probe"] == "replaced" and changed.actions["probe-reload"] == "ran"
    assert changed.containers["probe"] != applied.containers["probe"]
    assert "A=2" in changed.inspect("probe")["Config"]["Env"]


def test_duration_parsing() -> None:
    assert harness.duration_ns("1m30s") == 90 * 10**9
    assert harness.duration_ns("250ms") == 250 * 10**6
    assert harness.duration_ns("0") == 0
    with pytest.raises(harness.HarnessError):
        harness.duration_ns("10 seconds")


def test_inputs_not_in_read_back_form_change_on_every_apply(tmp_path: Path, base_image: str, cleanup: _Cleanup) -> None:
    """The perpetual diff, on the real engine: `cpus: "1"` reads back "1.0" (replacing), a start
    period of "90s" reads back "1m30s" and no memorySwap reads back twice the memory (both
    in place). The plan names each field, the second apply carries it out, and only then is
    the plan empty."""
    suffix = uuid.uuid4().hex[:8]
    resources = _mapping_resources(suffix, base_image, tmp_path, _free_port())[:4]
    probe = resources[3]["inputs"]
    probe.update({"cpus": "1", "readOnly": False, "uploads": []})
    probe["healthcheck"] = {**probe["healthcheck"], "tests": ["CMD", "true"], "startPeriod": "90s"}
    del probe["memorySwap"]
    cleanup.volumes.append(f"it-data-{suffix}")
    first = harness.apply(_synth(resources), state=cleanup.state)
    cleanup.applied.append(first)
    again = harness.apply(_synth(resources), state=cleanup.state)
    cleanup.applied.append(again)
    step = again.plan.steps["probe"]
    found = {c.path: (c.old, c.new, c.change) for c in step.changes}
    assert found == {
        "cpus": ("1.0", "1", "replace"),
        "healthcheck.startPeriod": ("1m30s", "90s", "state"),
        "memorySwap": (128, 0, "update"),
    }
    assert step.op == "replace" and again.containers["probe"] != first.containers["probe"]
    # Still not equal after the replacement: the diff is perpetual until the inputs change.
    third = harness.apply(_synth(resources), state=cleanup.state)
    cleanup.applied.append(third)
    assert third.plan.steps["probe"].op == "replace"
    probe.update({"cpus": "1.0", "memorySwap": 64})
    probe["healthcheck"]["startPeriod"] = "1m30s"
    fourth = harness.apply(_synth(resources), state=cleanup.state)
    cleanup.applied.append(fourth)
    fifth = harness.apply(_synth(resources), state=cleanup.state)
    cleanup.applied.append(fifth)
    assert fifth.plan.changed() == {}, fifth.plan.render()


def _command_resources(suffix: str, base_image: str) -> list[dict[str, Any]]:
    """A probe that logs every SIGHUP, a sidecar, and a command that signals the probe (its id a
    trigger, the sidecar only a dependency) and whose delete writes a marker into the probe."""

    def container(name: str) -> dict[str, Any]:
        return {
            "type": harness.CONTAINER,
            "name": name,
            "parent": None,
            "inputs": {
                "name": f"it-{name}-{suffix}",
                "image": base_image,
                "entrypoints": ["/bin/sh", "-c"],
                "command": ["trap 'echo hup' HUP; while :; do sleep 1; done"],
                "envs": ["V=1"],
                "tmpfs": {"/tmp": "rw,size=1m"},
            },
        }

    signal = {
        "type": "command:local:Command",
        "name": "signal",
        "parent": None,
        "inputs": {
            "create": f"docker kill --signal HUP it-probe-{suffix}",
            "delete": f"docker exec it-probe-{suffix} sh -c 'echo deleted >> /tmp/deletes'",
            "triggers": ["probe-id"],
        },
    }
    return [container("probe"), container("sidecar"), signal]


def test_commands_follow_pulumi_command(base_image: str, cleanup: _Cleanup) -> None:
    """pulumi-command's rules, carried out on the engine: a trigger change replaces the command
    (the new create runs, then the old stored delete at the end); a changed delete alone is an
    update, which re-runs create; a replaced dependency that is no input re-runs nothing."""
    suffix = uuid.uuid4().hex[:8]
    resources = _command_resources(suffix, base_image)
    depends = {"signal": {"probe", "sidecar"}}

    def apply() -> harness.Applied:
        applied = harness.apply(_synth(resources, depends), state=cleanup.state)
        cleanup.applied.append(applied)
        return applied

    def hups() -> int:
        return _logs(f"it-probe-{suffix}").count("hup")

    first = apply()
    assert first.commands_run == ["signal create"]
    _until(lambda: hups() == 1)

    resources[2]["inputs"]["triggers"] = ["probe-id", "rotate-1"]
    rotated = apply()
    assert rotated.plan.changed() == {"signal": "replace"}, rotated.plan.render()
    assert rotated.commands_run == ["signal create", "signal delete"]
    _until(lambda: hups() == 2)
    assert _exec(f"it-probe-{suffix}", "cat", "/tmp/deletes") == "deleted"

    resources[2]["inputs"]["delete"] = f"docker exec it-probe-{suffix} sh -c 'echo deleted-v2 >> /tmp/deletes'"
    redeleted = apply()
    assert redeleted.plan.changed() == {"signal": "update"}, redeleted.plan.render()
    assert [c.path for c in redeleted.plan.steps["signal"].changes] == ["delete"]
    assert redeleted.commands_run == ["signal create"]
    _until(lambda: hups() == 3)

    resources[1]["inputs"]["envs"] = ["V=2"]
    sidecar = apply()
    assert sidecar.plan.changed() == {"sidecar": "replace"}, sidecar.plan.render()
    assert sidecar.commands_run == []
    assert sidecar.containers["probe"] == first.containers["probe"]


def _logs(container: str) -> str:
    result = subprocess.run(["docker", "logs", container], capture_output=True, text=True, check=True)
    return result.stdout


def _until(check: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
