"""Prometheus and the exporters as the shipped stacks declare them (Pulumi mocks)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.support.tools import require_tool
from tools.synth import Synth

CONTAINER = "docker:index/container:Container"


def prometheus_yml(s: Synth) -> str:
    return s.files()["monitoring-prometheus/etc/prometheus/prometheus.yml"]


def test_every_worker_is_a_scrape_target_with_its_labels(prod: Synth) -> None:
    doc = yaml.safe_load(prometheus_yml(prod))
    (vllm,) = [job for job in doc["scrape_configs"] if job["job_name"] == "vllm"]
    targets = {c["targets"][0]: c["labels"] for c in vllm["static_configs"]}
    pools = {p["name"] for p in prod.of_type("inference-stack:workers:VllmWorkerPool")}
    workers = [c for c in prod.of_type(CONTAINER) if c["parent"] in pools]
    assert len(targets) == len(workers) == 8
    for w in workers:
        host = "gpu-b" if "gpu-b" in w["name"] else "gpu-a"
        replica = w["name"].rsplit("-", 1)[1]
        address = f"{w['inputs']['name']}:8000" if host == "gpu-a" else f"10.20.0.12:{8000 + int(replica)}"
        assert targets[address] == {
            "gpus": replica,
            "group": "mistral",
            "host": host,
            "model": "mistral-7b-instruct",
            "replica": replica,
            "role": "stable",
        }
    jobs = {job["job_name"] for job in doc["scrape_configs"]}
    assert jobs == {"vllm", "prometheus", "dcgm", "gateway", "gateway-status"}


def test_nothing_in_observability_publishes_on_every_interface(prod: Synth, dev: Synth) -> None:
    for synth in (dev, prod):
        for c in synth.of_type(CONTAINER):
            if c["parent"] not in ("monitoring", "tracing"):
                continue
            for port in c["inputs"].get("ports", []):
                assert port["ip"] not in ("0.0.0.0", "::", ""), (c["name"], port)
    (prom,) = [c for c in dev.of_type(CONTAINER) if c["name"] == "monitoring-prometheus"]
    assert prom["inputs"]["ports"][0]["ip"] == "127.0.0.1"
    dcgm_b = next(c for c in prod.of_type(CONTAINER) if c["name"] == "monitoring-dcgm-gpu-b")
    assert dcgm_b["inputs"]["ports"][0]["ip"] == "10.20.0.12"


def test_synthesized_config_and_rules_pass_promtool(prod: Synth, tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    files = prod.files()
    rules = tmp_path / "inference.yml"
    rules.write_text(files["monitoring-prometheus/etc/prometheus/rules/inference.yml"])
    config = tmp_path / "prometheus.yml"
    # Only the rules path changes, to where this test wrote the rules file.
    config.write_text(prometheus_yml(prod).replace("/etc/prometheus/rules/inference.yml", str(rules)))
    for args in (["check", "config", str(config)], ["check", "rules", str(rules)]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
