"""The k8s stack as pulumi-kubernetes would send it (the synth's registered inputs, written by
`make render`), checked by real consumers: the official OpenAPI schemas of Kubernetes 1.32 and
1.37 (PyPI `kubernetes-validate`, strict), the vendored CRDs' schemas, promtool on the
PrometheusRule, the real vllm-router's argument parser on the routers' command lines. Grafana
cannot run here: its dashboards ConfigMap is checked by structure against the Docker target's.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from components.kubernetes import manifests
from components.kubernetes.edge import GRACEFUL_STOP
from components.kubernetes.fleet import fleet
from components.kubernetes.workers import POOL_LABEL
from components.observability import grafana
from stacks.validation import split_config, validate
from tests.components.gateway.test_routing import ROUTER_BIN, require_router
from tests.support import crds
from tests.support.tools import require_tool
from tools import render
from tools.synth import ROOT, Synth, read_stack_file, synth_stack

# API groups the official schemas hold; the rest are custom resources with vendored CRDs.
CORE_GROUPS = ("v1", "apps/", "batch/", "policy/", "rbac.authorization.k8s.io/", "networking.k8s.io/")


def objects(synth: Synth) -> list[dict[str, Any]]:
    return [yaml.safe_load(text) for text in render.manifests(synth).values() if not text.startswith("# helm")]


def check(obj: dict[str, Any]) -> None:
    if obj["apiVersion"] == "v1" or obj["apiVersion"].startswith(CORE_GROUPS):
        for version in manifests.SUPPORTED_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    else:
        crds.validate(obj)


def config(**changes: Any) -> dict[str, Any]:
    values, secret_keys = read_stack_file(ROOT / "Pulumi.k8s.yaml")
    ours, _, _ = split_config(values, secret_keys)
    parsed = {k: json.loads(v) if k != "target" else v for k, v in ours.items()}
    parsed.update(changes)
    return parsed


def test_every_object_of_the_k8s_stack_passes_its_schema(k8s: Synth) -> None:
    found = objects(k8s)
    kinds = {o["kind"] for o in found}
    assert {
        "Namespace", "Deployment", "StatefulSet", "Job", "PersistentVolumeClaim", "PodDisruptionBudget",
        "ScaledObject", "ServiceMonitor", "PrometheusRule", "NetworkPolicy", "Secret", "ConfigMap", "Role",
    } <= kinds  # fmt: skip
    for obj in found:
        check(obj)


def test_the_schema_check_fails_a_misspelt_field(k8s: Synth) -> None:
    deployment = next(o for o in objects(k8s) if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        check(deployment)


def test_a_model_spanning_nodes_is_a_leader_worker_set() -> None:
    """tensorParallelSize 16 over 8-GPU nodes: two nodes per replica, as a LeaderWorkerSet whose
    leader and workers each request 8 GPUs; checked against the vendored LWS CRD."""
    cfg = config()
    big = {**cfg["workers"][1], "name": "big", "cluster": {"nodePool": "h100", "replicas": 2, "nodesPerReplica": 2}}
    big["model"] = {**big["model"], "tensorParallelSize": 16, "servedName": "big"}
    big["resources"] = {**big["resources"], "memoryMb": 65536}
    cfg["workers"] = [cfg["workers"][0], big]
    cfg["kubernetes"]["nodePools"][0]["nodes"] = 8
    stack, _ = validate("k8s", {k: v if k == "target" else json.dumps(v) for k, v in cfg.items()}, set())
    group = fleet(stack, "k8s").workers["big"]
    lws = next(o for o in group if o["kind"] == "LeaderWorkerSet")
    crds.validate(lws)
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2
    for role in ("leaderTemplate", "workerTemplate"):
        (main,) = template[role]["spec"]["containers"]
        assert main["resources"]["limits"]["nvidia.com/gpu"] == "8"
    # Tensor parallelism spans both nodes' 16 GPUs; a pipeline stage count on top would ask for 32.
    (leader_args,) = template["leaderTemplate"]["spec"]["containers"][0]["args"]
    assert "--tensor-parallel-size 16" in leader_args and "--pipeline-parallel-size" not in leader_args
    # Ray workers serve nothing, so the pool's router must not discover them.
    assert POOL_LABEL in template["leaderTemplate"]["metadata"]["labels"]
    assert POOL_LABEL not in template["workerTemplate"]["metadata"]["labels"]
    lws["spec"]["leaderWorkerTemplate"]["sizes"] = 2
    with pytest.raises(Exception, match="sizes"):
        crds.validate(lws)


def test_render_writes_every_manifest_and_no_secret_value(tmp_path: Path) -> None:
    for run in ("a", "b"):
        assert render.main(["--stack", "k8s", "--out", str(tmp_path / run)]) == 0
    first, second = tmp_path / "a" / "k8s" / "manifests", tmp_path / "b" / "k8s" / "manifests"
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
    assert {"namespace-inference.yaml", "namespace-gpu-operator.yaml"} == {n[3:] for n in names[:2]}, (
        "namespaces come first for `kubectl apply -f`"
    )
    for name in names:
        doc = yaml.safe_load((first / name).read_text())
        if doc.get("kind") == "Secret":
            assert "stringData" not in doc and "data" not in doc
    assert (tmp_path / "a" / "k8s" / "resources.json").is_file()


def test_the_prometheus_rule_passes_promtool(k8s: Synth, tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    (rule,) = [o for o in objects(k8s) if o["kind"] == "PrometheusRule"]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_dashboards_config_map_holds_the_docker_targets_dashboard(k8s: Synth) -> None:
    """Grafana cannot run here: by structure, the sidecar's label and the same dashboard."""
    (board,) = [o for o in objects(k8s) if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "inference-dashboards"]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(board["data"]["inference.json"]) == grafana.dashboard()


def test_the_real_router_parses_every_router_command(k8s: Synth) -> None:
    """vllm-router 0.1.17's own argument parser: an unknown flag or policy exits 2 at once. With
    service discovery and no cluster it gets past parsing and fails to reach the API instead."""
    require_router()
    routers = [o for o in objects(k8s) if o["kind"] == "Deployment" and o["metadata"]["name"].startswith("router-")]
    assert routers
    for deployment in routers:
        command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[0] == "vllm-router"
        for bad in ([], ["--policy", "least_conn"]):
            try:
                result = subprocess.run(
                    [str(ROUTER_BIN / "vllm-router"), *command[1:], *bad, "--port", "0"],
                    capture_output=True,
                    text=True,
                    timeout=8,
                    env={
                        "PATH": "/usr/bin:/bin",
                        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                        "KUBERNETES_SERVICE_PORT": "9",
                    },
                )
            except subprocess.TimeoutExpired:
                assert not bad, "an invalid policy was accepted"
                continue
            if bad:
                assert result.returncode == 2 and "invalid choice" in result.stderr, result.stderr
            else:
                assert result.returncode != 2 and "unrecognized arguments" not in result.stderr, result.stderr


def test_no_secret_value_reaches_an_input_in_plain_text(tmp_path: Path) -> None:
    """Every secret set, the kubeconfig among them: none appears in any resource's inputs, only
    as `[secret]` (the Secrets' files, the provider's kubeconfig)."""
    kubeconfig = "apiVersion: v1\nkind: Config\nclusters: [{name: c-k8s-secret-1}]\ncontexts: [{name: x}]\n"
    secrets = {
        "kubeconfig": kubeconfig,
        "gatewayApiKeys": json.dumps({"team-a": "sk-team-a-plaintext-0123456789"}),
        "vllmApiKey": "vllm-key-plaintext-0123456789",
        "hfToken": "hf_plaintext0123456789",
        "redisPassword": "redis-password-plaintext-0123",
    }
    stack_file = yaml.safe_load((ROOT / "Pulumi.k8s.yaml").read_text())
    stack_file["config"]["inference-stack:kubernetes"]["kubeconfig"] = "secret"
    path = tmp_path / "Pulumi.k8s.yaml"
    path.write_text(yaml.safe_dump(stack_file))
    synth = synth_stack("k8s", path, secrets)
    text = json.dumps(synth.resources)
    for value in (
        "c-k8s-secret-1",
        "sk-team-a-plaintext",
        "vllm-key-plaintext",
        "hf_plaintext",
        "redis-password-plaintext",
    ):
        assert value not in text, value
    (provider,) = synth.of_type("pulumi:providers:kubernetes")
    assert provider["inputs"]["kubeconfig"] == "[secret]"
    assert all(s["inputs"]["stringData"] == "[secret]" for s in synth.of_type("kubernetes:core/v1:Secret"))


def test_the_prefetch_jobs_commands_pass_shellcheck(tmp_path: Path) -> None:
    """Both sources' Job commands (Hugging Face, and S3 through the Docker target's s3_sync.py),
    as `sh -c` runs them, through shellcheck; the secret arrives on stdin from a file only."""
    shellcheck = require_tool("shellcheck")
    cfg = config()
    s3 = {**cfg["workers"][1], "name": "s3", "model": {**cfg["workers"][1]["model"], "servedName": "s3"}}
    s3["model"].update(source="s3://models/smollm/rev-1", revision="1" * 40)
    cfg["workers"].append(s3)
    cfg["kubernetes"]["nodePools"][0]["nodes"] = 8
    stack, _ = validate("k8s", {k: v if k == "target" else json.dumps(v) for k, v in cfg.items()}, set())
    jobs = [m for m in fleet(stack, "k8s").model_cache if m["kind"] == "Job"]
    commands = [j["spec"]["template"]["spec"]["containers"][0]["command"] for j in jobs]
    assert any("s3_sync.py" in c[2] and "--bucket models --prefix smollm/rev-1" in c[2] for c in commands)
    assert any("prefetch-hf.sh" in c[2] for c in commands)
    for i, (sh, flag, script) in enumerate(commands):
        assert (sh, flag) == ("/bin/sh", "-c")
        path = tmp_path / f"job-{i}.sh"
        path.write_text("#!/bin/sh\n" + script + "\n")
        result = subprocess.run([shellcheck, "-s", "sh", str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout
        assert "< /run/secrets/" in script and "--token" not in script


def test_weaviate_and_tracing_objects_pass_their_schemas() -> None:
    """The parts the shipped k8s stack leaves off: Weaviate with S3 backups, and Jaeger with the
    workers' OTLP flags pointing at its Service."""
    cfg = config(
        weaviate={"enabled": True, "backup": {"enabled": True, "bucket": "inference-backups", "region": "eu-west-1"}},
        observability={"tracing": {"enabled": True}},
    )
    stack, _ = validate("k8s", {k: v if k == "target" else json.dumps(v) for k, v in cfg.items()}, set())
    built = fleet(stack, "k8s", ["admin"])
    names = {(o["kind"], o["metadata"]["name"]) for o in built.all()}
    assert {("StatefulSet", "weaviate"), ("Deployment", "jaeger"), ("NetworkPolicy", "weaviate")} <= names
    for obj in built.all():
        check(obj)
    (weaviate,) = [o for o in built.data if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "weaviate"]
    env = {e["name"]: e["value"] for e in weaviate["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BACKUP_S3_BUCKET"] == "inference-backups" and "AUTHENTICATION_APIKEY_ALLOWED_KEYS" not in env
    worker = built.workers["mistral"][0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert worker[worker.index("--otlp-traces-endpoint") + 1] == "http://jaeger.inference.svc.cluster.local:4317"


def pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {})
    if obj["kind"] == "LeaderWorkerSet":
        return [spec["leaderWorkerTemplate"][role] for role in ("leaderTemplate", "workerTemplate")]
    return [spec["template"]] if "template" in spec and obj["kind"] != "Job" else []


def test_every_service_and_budget_selects_pods_the_stack_runs(k8s: Synth) -> None:
    """A selector no pod template carries would leave a Service without endpoints (nginx's
    routers unreachable) or a disruption budget guarding nothing."""
    found = objects(k8s)
    pods = [t["metadata"]["labels"] for o in found for t in pod_templates(o)]
    for obj in found:
        if obj["kind"] == "Service":
            selector = obj["spec"]["selector"]
        elif obj["kind"] == "PodDisruptionBudget":
            selector = obj["spec"]["selector"]["matchLabels"]
        else:
            continue
        assert any(selector.items() <= labels.items() for labels in pods), (obj["kind"], obj["metadata"]["name"])


@pytest.mark.parametrize("hf_token", [False, True])
def test_pods_mount_only_files_their_secret_holds(tmp_path: Path, hf_token: bool) -> None:
    """A non-optional Secret volume naming a key the Secret lacks leaves the pod unstartable: with
    a `download` group, `hf-token` is mounted exactly when the stack sets `hfToken`."""
    stack_file = yaml.safe_load((ROOT / "Pulumi.k8s.yaml").read_text())
    stack_file["config"]["inference-stack:workers"][1]["model"]["weights"] = "download"
    path = tmp_path / "Pulumi.k8s.yaml"
    path.write_text(yaml.safe_dump(stack_file))
    secrets = {"hfToken": "hf_plaintext0123456789"} if hf_token else {}
    synth = synth_stack("k8s", path, secrets, reveal=True)
    held = {
        s["inputs"]["metadata"]["name"]: set(s["inputs"]["stringData"])
        for s in synth.of_type("kubernetes:core/v1:Secret")
    }
    mounted: set[str] = set()
    for obj in objects(synth):
        for template in pod_templates(obj):
            for volume in template["spec"].get("volumes", []):
                source = volume.get("secret")
                if source and not source.get("optional"):
                    keys = {item["key"] for item in source.get("items", [])}
                    assert keys <= held[source["secretName"]], (obj["metadata"]["name"], keys)
                    mounted |= keys
    assert ("hf-token" in mounted) == hf_token


def test_the_gateways_pre_stop_passes_shellcheck(tmp_path: Path) -> None:
    shellcheck = require_tool("shellcheck")
    path = tmp_path / "pre-stop.sh"
    path.write_text("#!/bin/sh\n" + GRACEFUL_STOP + "\n")
    result = subprocess.run([shellcheck, "-s", "sh", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
