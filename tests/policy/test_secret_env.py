"""No secret-looking env var holds a plain value. Policies see secrets unwrapped, so this rule is
checked here, on the secretness the mock runtime records: a secret input is written "[secret]"."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tools.synth import SECRET, synth_stack

SECRET_LOOKING = re.compile(r"(_KEY$|TOKEN|PASSWORD|SECRET)")
# A variable that names a file holding the secret (Grafana's `__FILE`, the `_FILE` convention).
FILE_REFERENCE = re.compile(r"_FILE$")


def secret_looking_plain_envs(resources: list[dict[str, Any]]) -> list[tuple[str, str]]:
    found = []
    for res in resources:
        envs = res["inputs"].get("envs")
        if envs == SECRET:
            continue
        for env in envs or []:
            if env == SECRET:
                continue
            key = str(env).split("=", 1)[0]
            if SECRET_LOOKING.search(key.upper()) and not FILE_REFERENCE.search(key.upper()):
                found.append((res["name"], key))
    return found


@pytest.mark.parametrize("stack", ["dev", "prod", "ci"])
def test_no_secret_looking_env_holds_a_plain_value(stack: str) -> None:
    assert secret_looking_plain_envs(synth_stack(stack).resources) == []


def test_the_check_catches_a_plain_token_and_passes_a_secret_one() -> None:
    plain = [{"name": "w", "inputs": {"envs": ["HF_TOKEN=hf_abc", "HF_HOME=/x"]}}]
    assert secret_looking_plain_envs(plain) == [("w", "HF_TOKEN")]
    hidden = [{"name": "w", "inputs": {"envs": [SECRET, "GF_SECURITY_ADMIN_PASSWORD__FILE=/run/secrets/p"]}}]
    assert secret_looking_plain_envs(hidden) == []
