"""The stack file `make up` deploys: the committed one, moved to vLLM's CPU build on a machine
without an NVIDIA GPU.

`make up` passes the result to `pulumi up --config-file`, so the committed `Pulumi.<stack>.yaml`
never changes under a developer's feet. Pulumi writes the stack's encryption salt and secrets
into that file, so they are carried over from the previous output: regenerating it must never
lose the key to secrets already in state. Secrets go into that file with
`pulumi config set --secret [--path] --config-file .state/Pulumi.dev.yaml <key> <value>`; every
`secure:` value, top-level or nested, survives the next `make up`.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from stacks import stackfile
from stacks.errors import ConfigError
from tools.synth import ROOT

CPU_IMAGE = "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0"
_KEPT_TOP_LEVEL = ("secretsprovider", "encryptedkey", "encryptionsalt")


def to_cpu(doc: dict[str, Any], cpus_available: int) -> dict[str, Any]:
    """The same stack on CPUs: no device requests, the CPU image, unquantized weights, and CPU
    limits that fit this machine (Docker refuses `--cpus` above the machine's count)."""
    out = copy.deepcopy(doc)
    config = out.setdefault("config", {})
    for host in config.get("inference-stack:hosts", []):
        host["gpus"] = {"count": 0}
    for group in config.get("inference-stack:workers", []):
        group["accelerator"] = "cpu"
        group["image"] = CPU_IMAGE
        group.pop("gpuAssignments", None)
        model = group.setdefault("model", {})
        model["quantization"] = "none"
        model["tensorParallelSize"] = 1
        if model.get("dtype") in ("half", "float16"):
            model["dtype"] = "bfloat16"
        resources = group.setdefault("resources", {})
        resources["cpus"] = min(float(resources.get("cpus", 8)), cpus_available)
        resources["cpuReservation"] = min(float(resources.get("cpuReservation", 4)), resources["cpus"])
    return out


KeyPath = tuple[str | int, ...]
"""Keys and list indexes from `config:` down to a value."""


def _is_secure(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def secure_values(value: Any, path: KeyPath = ()) -> list[tuple[KeyPath, Any]]:
    """Every `secure:` value under `value`, with its path of keys and list indexes: top-level ones
    (`pulumi config set --secret`) and nested ones (`pulumi config set --secret --path`)."""
    if _is_secure(value):
        return [(path, value)]
    if isinstance(value, dict):
        return [found for key, sub in value.items() for found in secure_values(sub, (*path, key))]
    if isinstance(value, list):
        return [found for index, sub in enumerate(value) for found in secure_values(sub, (*path, index))]
    return []


def _put(config: dict[str, Any], path: KeyPath, value: Any) -> None:
    """Sets `value` at `path`, creating the mappings on the way. A list item the committed file no
    longer has (a removed worker group, say) takes its secret with it."""
    node: Any = config
    for step, after in itertools.pairwise(path):
        if isinstance(step, int):
            if not (isinstance(node, list) and step < len(node)):
                return
        elif isinstance(node, dict):
            if not isinstance(node.get(step), (dict, list)):
                node[step] = [] if isinstance(after, int) else {}
        else:
            return
        node = node[step]
    last = path[-1]
    if isinstance(last, int):
        if isinstance(node, list) and last < len(node):
            node[last] = value
    elif isinstance(node, dict):
        node[last] = value


def carry_over(new: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """The previous output's encryption settings and every secret, top-level or nested, into `new`."""
    for key in _KEPT_TOP_LEVEL:
        if key in previous:
            new[key] = previous[key]
    found = secure_values(previous.get("config") or {})
    if found:
        config = new.setdefault("config", {})
        for path, value in found:
            _put(config, path, value)
    return new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--accelerator", choices=["nvidia", "cpu"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    source = ROOT / f"Pulumi.{args.stack}.yaml"
    try:
        # Strict: yaml.safe_load would quietly drop the first of two equal keys before the render sees them.
        doc = stackfile.parse(source.read_text(), source.name)
        previous = stackfile.parse(args.out.read_text(), args.out.name) if args.out.exists() else None
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.accelerator == "cpu":
        doc = to_cpu(doc, os.cpu_count() or 1)
        print(f"no NVIDIA GPU found: deploying '{args.stack}' with vLLM's CPU build ({CPU_IMAGE})", file=sys.stderr)
    if previous is not None:
        doc = carry_over(doc, previous)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Generated by `make up` from Pulumi.{args.stack}.yaml; edit that file instead.\n"
    args.out.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
