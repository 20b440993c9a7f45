"""Reads the stack's Pulumi config (and the models' cached `config.json`) and validates it with
`stacks.validation`, before any resource is registered: a bad config must never half-deploy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from stacks import secrets, stackfile
from stacks.config import SECRET_KEYS, StackConfig
from stacks.errors import NAMESPACE
from stacks.model_files import read_cached
from stacks.placement import Placement
from stacks.validation import split_config, validate


@dataclass(frozen=True)
class LoadedStack:
    name: str
    config: StackConfig
    placements: list[Placement]
    secrets: dict[str, pulumi.Output[str]]
    """Secret config values by key, each still a Pulumi secret."""
    weaviate_users: list[str]
    """The user names of `weaviateApiKeys` (names are not secret; their keys are)."""


def raw_config() -> tuple[dict[str, Any], set[str], list[str]]:
    """`split_config` of the config Pulumi hands to the program."""
    merged: dict[str, Any] = dict(runtime_config.get_config_env())
    merged.update(runtime_config.CONFIG.get())
    secret = {k for k in merged if runtime_config.is_config_secret(k)}
    secret |= set(runtime_config.get_config_secret_keys_env())
    return split_config(merged, secret)


def load() -> LoadedStack:
    stack = pulumi.get_stack()
    # The CLI hands over config already parsed, so a key given twice in the stack file has
    # lost its first value by now; the file itself still shows it.
    stack_file = Path(f"Pulumi.{stack}.yaml")
    if stack_file.is_file():
        stackfile.parse(stack_file.read_text(), stack_file.name)
    values, secret_keys, foreign = raw_config()
    cfg, placements = validate(stack, values, secret_keys, foreign, read_cached)
    conf = pulumi.Config(NAMESPACE)
    secret_values = {key: conf.require_secret(key) for key in SECRET_KEYS if key in values}
    users = list(secrets.parse_weaviate_keys(values["weaviateApiKeys"])) if "weaviateApiKeys" in values else []
    return LoadedStack(stack, cfg, placements, secret_values, users)
