"""Custom resources checked against their CRD's `openAPIV3Schema` (tests/fixtures/crds/), as
strictly as the API server's pruning would be loose: a property the schema does not name fails,
unless the schema keeps unknown fields (`x-kubernetes-preserve-unknown-fields`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "crds"


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with `additionalProperties: false` wherever it lists properties and keeps no
    unknown field; `int-or-string` becomes either."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            pattern = node.get("pattern")
            if isinstance(pattern, str) and pattern.startswith("^(?i)"):
                # Go's regexp takes a flag anywhere; Python's only at the start.
                node["pattern"] = "(?i)^" + pattern.removeprefix("^(?i)")
            if node.pop("x-kubernetes-int-or-string", False):
                node.pop("type", None)
                node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def schema_of(kind: str) -> dict[str, Any]:
    """The served version's schema of the vendored CRD for `kind`, closed."""
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            (version,) = [v for v in crd["spec"]["versions"] if v.get("served") and v.get("storage")]
            return _closed(version["schema"]["openAPIV3Schema"])
    raise KeyError(f"no vendored CRD for {kind} in {CRDS}")


def validate(obj: dict[str, Any]) -> None:
    """Raises jsonschema.ValidationError when `obj` breaks its kind's CRD schema."""
    schema = schema_of(obj["kind"])
    # metadata is the API server's ObjectMeta, which the CRD leaves open.
    jsonschema.validate({**obj, "metadata": {}}, schema)
