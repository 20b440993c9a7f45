"""A model and the config encoding that tests and benchmarks both build stacks from."""

from __future__ import annotations

import json
from typing import Any

VALID_MODEL: dict[str, Any] = {
    "id": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
    "revision": "31b70e2e869a7173562077fd711b654946d38674",
    "servedName": "smollm2-1.7b",
    "coldStartSeconds": 60,
    "weights": "download",
}


def as_pulumi_config(values: dict[str, Any]) -> dict[str, str]:
    """What the Pulumi CLI hands the program: namespaced keys, structured values as JSON."""
    return {f"inference-stack:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
