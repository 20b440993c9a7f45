"""`make up` on a machine without a GPU: the dev stack moved to vLLM's CPU build."""

from __future__ import annotations

from pathlib import Path

import yaml

from tools import variants
from tools.synth import ROOT, synth_stack


def test_cpu_variant_of_dev_is_valid_and_gpu_free(tmp_path: Path) -> None:
    out = tmp_path / "Pulumi.dev.yaml"
    assert variants.main(["--stack", "dev", "--accelerator", "cpu", "--out", str(out)]) == 0
    synth = synth_stack("dev", out)
    (worker,) = [c for c in synth.of_type("docker:index/container:Container") if c["parent"] == "chat"]
    inputs = worker["inputs"]
    assert "deviceRequests" not in inputs
    assert inputs["image"] == variants.CPU_IMAGE
    assert "--gpu-memory-utilization" not in inputs["command"]
    assert any(e.startswith("VLLM_CPU_KVCACHE_SPACE=") for e in inputs["envs"])
    assert float(inputs["cpus"]) <= (__import__("os").cpu_count() or 1)


def test_nvidia_variant_is_the_committed_stack(tmp_path: Path) -> None:
    out = tmp_path / "Pulumi.dev.yaml"
    variants.main(["--stack", "dev", "--accelerator", "nvidia", "--out", str(out)])
    assert yaml.safe_load(out.read_text()) == yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())


def test_regenerating_keeps_the_encryption_salt_and_secrets(tmp_path: Path) -> None:
    out = tmp_path / "Pulumi.dev.yaml"
    variants.main(["--stack", "dev", "--accelerator", "cpu", "--out", str(out)])
    doc = yaml.safe_load(out.read_text())
    doc["encryptionsalt"] = "v1:salt"
    doc["config"]["inference-stack:hfToken"] = {"secure": "v1:abc"}
    out.write_text(yaml.safe_dump(doc))
    variants.main(["--stack", "dev", "--accelerator", "cpu", "--out", str(out)])
    again = yaml.safe_load(out.read_text())
    assert again["encryptionsalt"] == "v1:salt"
    assert again["config"]["inference-stack:hfToken"] == {"secure": "v1:abc"}


def test_regenerating_keeps_nested_secrets_where_pulumi_config_set_path_wrote_them(tmp_path: Path) -> None:
    out = tmp_path / "Pulumi.dev.yaml"
    variants.main(["--stack", "dev", "--accelerator", "cpu", "--out", str(out)])
    doc = yaml.safe_load(out.read_text())
    config = doc["config"]
    # What `pulumi config set --secret --path` writes: under a mapping the committed file has,
    # one it does not have, and inside a list item.
    config["inference-stack:observability"]["tracing"]["token"] = {"secure": "v1:tracing"}
    config["inference-stack:weaviate"] = {"backup": {"secretAccessKey": {"secure": "v1:weaviate"}}}
    config["inference-stack:workers"][0]["model"]["token"] = {"secure": "v1:worker"}
    out.write_text(yaml.safe_dump(doc))
    variants.main(["--stack", "dev", "--accelerator", "cpu", "--out", str(out)])
    again = yaml.safe_load(out.read_text())["config"]
    assert again["inference-stack:observability"]["tracing"] == {
        "enabled": True,
        "storage": "memory",
        "token": {"secure": "v1:tracing"},
    }
    assert again["inference-stack:weaviate"] == {"backup": {"secretAccessKey": {"secure": "v1:weaviate"}}}
    assert again["inference-stack:workers"][0]["model"]["token"] == {"secure": "v1:worker"}
    # The rest is regenerated from the committed file, not carried over.
    assert again["inference-stack:workers"][0]["image"] == variants.CPU_IMAGE


def test_a_secret_of_a_list_item_the_committed_file_dropped_goes_with_it() -> None:
    previous = {"config": {"inference-stack:workers": [{}, {"model": {"token": {"secure": "v1:gone"}}}]}}
    new = variants.carry_over({"config": {"inference-stack:workers": [{"name": "chat"}]}}, previous)
    assert new == {"config": {"inference-stack:workers": [{"name": "chat"}]}}
    assert variants.secure_values(previous["config"]) == [
        (("inference-stack:workers", 1, "model", "token"), {"secure": "v1:gone"})
    ]


def test_a_previous_output_with_a_duplicate_key_is_refused_not_collapsed(tmp_path: Path) -> None:
    """`make up` regenerates its config from the last one; a key given twice there (a hand edit)
    must stop it, not lose the first value before the render can see it."""
    out = tmp_path / "Pulumi.dev.yaml"
    out.write_text("config:\n  inference-stack:hfToken:\n    secure: v1:YQ==\n  inference-stack:hfToken: plain\n")
    assert variants.main(["--stack", "dev", "--accelerator", "nvidia", "--out", str(out)]) == 2
    assert "secure: v1:YQ==" in out.read_text()
