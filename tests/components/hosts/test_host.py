"""The host provisioning chain as the shipped stacks declare it (Pulumi mocks), and the up-time
preflight on a measured inventory."""

from __future__ import annotations

import itertools
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from composition.platform import main as program
from stacks.preflight import PreflightError
from tools.synth import Mocks, RecordingMonitor, Synth, read_stack_file, run

FIXTURES = Path(__file__).parents[2] / "fixtures/nvidia-smi"
PROD_CHAIN = ["toolkit", "runtime", "verify", "storage", "tools", "weights-mistral-7b-instruct", "images"]


def steps(synth: Synth, host: str) -> list[dict[str, Any]]:
    return [r for r in synth.resources if r["type"] == "command:remote:Command" and r["parent"] == host]


def words(step: dict[str, Any]) -> list[str]:
    return shlex.split(step["inputs"]["create"])


def test_prod_has_one_provider_per_host(prod: Synth) -> None:
    providers = {r["name"]: r["inputs"].get("host") for r in prod.of_type("pulumi:providers:docker")}
    assert providers == {
        "gpu-a-docker": "ssh://deploy@gpu-a.internal:22",
        "gpu-b-docker": "ssh://deploy@gpu-b.internal:22",
    }


def test_prod_has_one_provisioning_chain_per_host(prod: Synth) -> None:
    for host in ("gpu-a", "gpu-b"):
        names = {s["name"] for s in steps(prod, host)}
        chain = [f"{host}-{s}" for s in PROD_CHAIN]
        # Both publish on their private address, so both check the firewall: gpu-b its workers,
        # gpu-a Jaeger's OTLP port for gpu-b's workers.
        chain.insert(4, f"{host}-firewall")
        assert names == set(chain)
        for before, after in itertools.pairwise(chain):
            assert prod.depends[after] == {before}, f"{after} must run right after {before}"


def test_every_worker_and_host_resource_waits_for_verification(prod: Synth) -> None:
    for res in prod.resources:
        if res["type"].startswith("docker:index/"):
            host = "gpu-b" if "gpu-b" in res["name"] else "gpu-a"  # the gateway runs on gpu-a
            assert prod.depends_on(res["name"], f"{host}-verify"), res["name"]
            assert prod.depends_on(res["name"], f"{host}-weights-mistral-7b-instruct"), res["name"]


def test_dev_local_host_is_verified_but_not_provisioned(dev: Synth) -> None:
    local = [r["name"] for r in dev.of_type("command:local:Command")]
    assert local == ["chat-local-0-member", "gateway-readmit", "gateway-reload", "local-images", "local-verify"]
    assert not dev.of_type("command:remote:Command")
    assert dev.depends_on("chat-local-0", "local-verify")


def test_render_writes_each_step_script(prod: Synth) -> None:
    files = prod.files()
    assert files["gpu-a-toolkit/toolkit.sh"] == (Path("components/hosts/scripts/toolkit.sh")).read_text()
    assert "gpu-b-firewall/firewall.sh" in files


def s3_stack() -> tuple[dict[str, str], list[str]]:
    config, secret_keys = read_stack_file(Path("Pulumi.prod.yaml"))
    workers = json.loads(config["inference-stack:workers"])
    workers[0]["model"]["source"] = "s3://models/mistral-7b-awq"
    workers[0]["model"]["s3EndpointUrl"] = "http://10.20.0.5:9000"
    config["inference-stack:workers"] = json.dumps(workers)
    config["inference-stack:s3AccessKeyId"] = "AKIATESTKEYID"
    config["inference-stack:s3SecretAccessKey"] = "s3-secret-never-shown"
    return config, [*secret_keys, "inference-stack:s3AccessKeyId", "inference-stack:s3SecretAccessKey"]


def test_s3_source_syncs_with_credentials_on_stdin() -> None:
    config, secret_keys = s3_stack()
    synth = run("prod", config, secret_keys, program)
    weights = synth.named("gpu-b-weights-mistral-7b-instruct")
    w = words(weights)
    assert w[:4] == ["sudo", "-n", "/opt/inference-stack/venv/bin/python", "-c"]
    assert w[5:] == [
        "s3_sync.py",
        "--bucket",
        "models",
        "--prefix",
        "mistral-7b-awq",
        "--dest",
        "/nvme/model-cache/hub/models--solidrust--Mistral-7B-Instruct-v0.3-AWQ/snapshots/"
        "95b1295ddd1a8673117cdc7bd2a4da2a457bb3f7",
        "--endpoint-url",
        "http://10.20.0.5:9000",
    ]
    assert weights["inputs"]["stdin"] == "[secret]"
    shipped = Path("components/hosts/scripts/s3_sync.py").read_text()
    assert synth.files()["gpu-b-weights-mistral-7b-instruct/s3_sync.py"] == shipped
    dump = json.dumps(synth.resources)
    assert "s3-secret-never-shown" not in dump and "AKIATESTKEYID" not in dump


def inventory(driver: str = "580.159.04", memory: int = 81559, count: int = 4) -> str:
    fields = (FIXTURES / "query-gpu-noheader.csv").read_text().strip().split(", ")
    lines = []
    for i in range(count):
        f = list(fields)
        f[0], f[1], f[3], f[4] = str(i), f[1][:-1] + str(i), str(memory), driver
        lines.append(", ".join([*f, "Disabled"]))
    return "\n".join([*lines, "uvm=ok"]) + "\n"


def prod_with_inventory(stdout: dict[str, str]) -> tuple[Synth | None, RecordingMonitor, BaseException | None]:
    config, secret_keys = read_stack_file(Path("Pulumi.prod.yaml"))
    monitor = RecordingMonitor(Mocks(stdout))
    try:
        return run("prod", config, secret_keys, program, monitor=monitor, stdout=stdout), monitor, None
    except PreflightError as err:
        return None, monitor, err


def test_matching_inventory_deploys_every_worker() -> None:
    synth, _, error = prod_with_inventory({"gpu-a-verify": inventory(), "gpu-b-verify": inventory()})
    assert error is None and synth is not None
    workers = [c for c in synth.of_type("docker:index/container:Container") if c["parent"] == "mistral"]
    assert len(workers) == 8


@pytest.mark.parametrize(
    ("stdout", "message", "stopped"),
    [
        (inventory(driver="550.54.14"), "driver 550.54.14 is older than 575.51.03", [0, 1, 2, 3]),
        (inventory(memory=24576), "(NVIDIA H100 80GB HBM3, 24576 MiB): group `mistral`", [0, 1, 2, 3]),
        (inventory(count=2), "does not exist (the host has 2:", [2, 3]),
    ],
    ids=["old-driver", "small-gpu", "missing-gpu"],
)
def test_measured_inventory_failure_stops_workers_on_that_host(stdout: str, message: str, stopped: list[int]) -> None:
    _, monitor, error = prod_with_inventory({"gpu-a-verify": inventory(), "gpu-b-verify": stdout})
    assert error is not None and message in str(error) and "host `gpu-b`" in str(error)
    registered = {name for _, type_, name, _, _ in monitor.records if type_ == "docker:index/container:Container"}
    assert not any(f"mistral-gpu-b-{i}" in registered for i in stopped)
    admitted = {name for _, type_, name, _, _ in monitor.records if name.endswith("-member")}
    assert not any(f"mistral-gpu-b-{i}-member" in admitted for i in stopped), "no stopped worker joins the gateway"
