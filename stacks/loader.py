"""Reads the stack's Pulumi config into a validated `StackConfig`, or stops with every problem.

Runs before any resource is registered: a bad config must never half-deploy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config
from pydantic import ValidationError

from components.data.weaviate import parse_api_keys
from components.gateway.nginx import render_clients_map
from stacks.config import SECRET_KEYS, StackConfig
from stacks.errors import NAMESPACE, ConfigError, ConfigIssue, did_you_mean, field_aliases, issues_from_validation
from stacks.placement import Placement, place


@dataclass(frozen=True)
class LoadedStack:
    name: str
    config: StackConfig
    placements: list[Placement]
    secrets: dict[str, pulumi.Output[str]]
    """Secret config values by key, each still a Pulumi secret."""
    weaviate_users: list[str]
    """The user names of `weaviateApiKeys` (names are not secret; their keys are)."""


def raw_config() -> tuple[dict[str, Any], set[str]]:
    """All `inference-stack:*` keys as Pulumi hands them to the program, and which are secret."""
    merged: dict[str, Any] = dict(runtime_config.get_config_env())
    merged.update(runtime_config.CONFIG.get())
    prefix = NAMESPACE + ":"
    values = {k[len(prefix) :]: v for k, v in merged.items() if k.startswith(prefix)}
    secret = {k for k in values if runtime_config.is_config_secret(prefix + k)}
    secret |= {k[len(prefix) :] for k in runtime_config.get_config_secret_keys_env() if k.startswith(prefix)}
    return values, secret


def _client_keys_issues(value: Any) -> list[ConfigIssue]:
    """The client keys are a secret, so problems name the rule but never echo a value."""
    try:
        try:
            keys = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError:
            keys = None
        if not isinstance(keys, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
            raise ValueError("gatewayApiKeys must be a JSON object of client name to key")
        render_clients_map(keys)
    except ValueError as err:
        return [
            ConfigIssue(
                f"{NAMESPACE}:gatewayApiKeys",
                "(secret, not shown)",
                str(err).split(": ", 1)[-1] if str(err).startswith("gatewayApiKeys") else str(err),
                'pulumi config set --secret gatewayApiKeys \'{"team-a": "<key of 16+ characters>"}\'',
            )
        ]
    return []


def validate(stack: str, values: dict[str, Any], secret_keys: set[str]) -> tuple[StackConfig, list[Placement]]:
    """Pure validation of the raw key/value config. Raises ConfigError listing every problem."""
    issues: list[ConfigIssue] = []
    structured = field_aliases(StackConfig)
    data: dict[str, Any] = {}
    for key, value in sorted(values.items()):
        if key in SECRET_KEYS:
            if key == "gatewayApiKeys" and key in secret_keys:
                issues += _client_keys_issues(value)
            if key == "weaviateApiKeys" and key in secret_keys:
                try:
                    parse_api_keys(value)
                except ValueError as err:
                    issues.append(
                        ConfigIssue(
                            f"{NAMESPACE}:{key}",
                            "(secret, not shown)",
                            str(err).removeprefix("weaviateApiKeys: "),
                            'pulumi config set --secret weaviateApiKeys \'{"app": "<key of 16+ characters>"}\'',
                        )
                    )
            if key not in secret_keys:
                issues.append(
                    ConfigIssue(
                        f"{NAMESPACE}:{key}",
                        "(plain text, not shown)",
                        "secrets must be Pulumi secrets: a plain value sits unencrypted in the stack file and state",
                        f"pulumi config rm {key} && pulumi config set --secret {key} <value>",
                    )
                )
        elif key in structured:
            try:
                data[key] = json.loads(value) if isinstance(value, str) else value
            except json.JSONDecodeError:
                issues.append(
                    ConfigIssue(
                        f"{NAMESPACE}:{key}",
                        value,
                        "this key holds a structured object or list",
                        "write it as YAML in the stack file, or use `pulumi config set --path`",
                    )
                )
        else:
            issues.append(
                ConfigIssue(
                    f"{NAMESPACE}:{key}",
                    value if key not in secret_keys else "[secret]",
                    "unknown key",
                    did_you_mean(key, structured + list(SECRET_KEYS)),
                )
            )
    cfg: StackConfig | None = None
    try:
        cfg = StackConfig.model_validate(data)
    except ValidationError as error:
        issues += issues_from_validation(StackConfig, error)
    placements: list[Placement] = []
    if cfg is not None:
        placements, more = place(cfg)
        issues += more

    if issues or cfg is None:
        raise ConfigError(stack, issues)
    return cfg, placements


def load() -> LoadedStack:
    stack = pulumi.get_stack()
    values, secret_keys = raw_config()
    cfg, placements = validate(stack, values, secret_keys)
    conf = pulumi.Config(NAMESPACE)
    secrets = {key: conf.require_secret(key) for key in SECRET_KEYS if key in values}
    users = list(parse_api_keys(values["weaviateApiKeys"])) if "weaviateApiKeys" in values else []
    return LoadedStack(stack, cfg, placements, secrets, users)
