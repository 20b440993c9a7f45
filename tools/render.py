"""`make render STACK=<name>`: write what a stack would deploy, for review without credentials.

    build/<stack>/resources.json              one object per resource (type, name, parent, inputs)
    build/<stack>/files/<resource>/<path>      every generated file, at its path in the container
    build/<stack>/diagram.mmd                  a mermaid diagram of the resource tree
    build/<stack>/manifests/NN-<kind>-<name>.yaml   a `target: kubernetes` stack's objects, as
                                               pulumi-kubernetes sends them (`kubectl apply --dry-run=server -f`)

Two runs on the same config give byte-identical output. An invalid config prints the error,
exits 2 and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from stacks.errors import ConfigError
from tools.synth import ROOT, Synth, synth_stack


def diagram(synth: Synth) -> str:
    """Mermaid flowchart: components as subgraphs, custom resources (and their children) as nodes."""
    children: dict[str | None, list[dict[str, Any]]] = {}
    for res in synth.resources:
        children.setdefault(res["parent"], []).append(res)
    lines = ["flowchart LR"]
    names = [res["name"] for res in synth.resources]

    def node_id(name: str) -> str:
        return "n_" + "".join(c if c.isalnum() else "_" for c in name)

    def emit(parent: str | None, indent: str) -> None:
        for res in children.get(parent, []):
            short = res["type"].split(":")[-1]
            if res["type"].startswith("inference-stack:"):
                lines.append(f'{indent}subgraph {node_id(res["name"])}["{short}: {res["name"]}"]')
                emit(res["name"], indent + "  ")
                lines.append(f"{indent}end")
            elif not res["type"].startswith("pulumi:providers:"):
                lines.append(f'{indent}{node_id(res["name"])}["{short}<br/>{res["name"]}"]')
                # A custom resource's children (a worker's gateway membership) sit beside it; parents
                # are known by name only, so a name two resources share has none of its own.
                if names.count(res["name"]) == 1:
                    emit(res["name"], indent)

    emit(None, "  ")
    for res in synth.of_type("docker:index/container:Container"):
        for mount in res["inputs"].get("mounts", []):
            source = next(
                (
                    r["name"]
                    for r in synth.resources
                    if r["type"] == "docker:index/volume:Volume"
                    and r["inputs"].get("name", r["name"]) == mount["source"]
                ),
                None,
            )
            if source:
                mode = "ro" if mount.get("readOnly") else "rw"
                lines.append(f"  {node_id(res['name'])} -->|{mode} {mount['target']}| {node_id(source)}")
    return "\n".join(lines) + "\n"


_NOT_OBJECTS = ("pulumi:providers:", "kubernetes:helm.sh/")
_APPLY_ORDER = {
    "Namespace": 0,
    "ServiceAccount": 1,
    "Role": 1,
    "RoleBinding": 1,
    "Secret": 1,
    "ConfigMap": 1,
    "PersistentVolumeClaim": 1,
    "Service": 2,
}


def manifests(synth: Synth) -> dict[str, str]:
    """Each Kubernetes object the synth registered, by file name, numbered in the order
    `kubectl apply -f` needs (the namespace first, what pods mount before the pods). A Secret's
    values are Pulumi secrets: it is written without them. The Helm release is written as the
    chart and values it installs."""
    found: dict[str, str] = {}
    for res in sorted(synth.resources, key=lambda r: _APPLY_ORDER.get(r["inputs"].get("kind", ""), 9)):
        kind = res["type"]
        if not kind.startswith("kubernetes:") or kind.startswith(_NOT_OBJECTS):
            if kind.startswith("kubernetes:helm.sh/"):
                r = res["inputs"]
                command = f"helm upgrade --install {r['name']} {r['chart']} --repo {r['repositoryOpts']['repo']}"
                found[f"{len(found):02d}-helm-release-{r['name']}.yaml"] = (
                    f"# {command} --version {r['version']} -n {r['namespace']} -f this\n"
                    + yaml.safe_dump(r.get("values", {}), sort_keys=True)
                )
            continue
        obj = dict(res["inputs"])
        header = ""
        if obj.get("kind") == "Secret":
            obj.pop("stringData", None)
            header = "# Its values are Pulumi secrets, set by `pulumi up`; a render never holds them.\n"
        name = f"{len(found):02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        found[name] = header + yaml.safe_dump(obj, sort_keys=False)
    return found


def write(synth: Synth, out: Path) -> None:
    out.mkdir(parents=True)
    (out / "resources.json").write_text(json.dumps(synth.resources, indent=2, sort_keys=True) + "\n")
    for key, content in sorted(synth.files().items()):
        resource, _, path = key.partition("/")
        target = out / "files" / resource / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    (out / "diagram.mmd").write_text(diagram(synth))
    objects = manifests(synth)
    if objects:
        (out / "manifests").mkdir()
        for name, text in objects.items():
            (out / "manifests" / name).write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render a stack offline (no Pulumi CLI, no credentials).")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "build")
    parser.add_argument("--stack-file", type=Path, help="default: Pulumi.<stack>.yaml")
    args = parser.parse_args(argv)
    stack_file = args.stack_file or ROOT / f"Pulumi.{args.stack}.yaml"
    if not stack_file.is_file():
        print(f"error: no stack file {stack_file}", file=sys.stderr)
        return 2
    try:
        synth = synth_stack(args.stack, stack_file)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    # Write beside the target and swap, so a reader never sees half a render.
    staging = Path(tempfile.mkdtemp(prefix=f".{args.stack}-", dir=args.out))
    try:
        write(synth, staging / "out")
        final = args.out / args.stack
        if final.exists():
            shutil.rmtree(final)
        (staging / "out").rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"rendered {len(synth.resources)} resources and {len(synth.files())} files to {args.out / args.stack}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
