"""Shared test helpers: a valid config to mutate, and running the program under mocks."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tools.fixtures import VALID_MODEL as VALID_MODEL  # re-exported: the tests' one import of both
from tools.fixtures import as_pulumi_config as as_pulumi_config

if TYPE_CHECKING:
    from stacks.errors import ConfigError


def valid_config() -> dict[str, Any]:
    """A small valid stack, as the Python objects behind `inference-stack:*` keys."""
    return copy.deepcopy(
        {
            "hosts": [{"name": "gpu-a", "gpus": {"count": 2}}],
            "workers": [{"name": "chat", "image": "vllm/vllm-openai:v0.32.0", "model": dict(VALID_MODEL)}],
        }
    )


def validate_values(cfg: dict[str, Any], secret_keys: Iterable[str] = ()) -> None:
    """The loader's validation of `cfg` (our keys to Python values), as the CLI would hand it over,
    with the loader's one read of the local model caches."""
    from stacks.model_files import read_cached
    from stacks.validation import validate

    values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in cfg.items()}
    validate("test", values, set(secret_keys), read_model_files=read_cached)


def refused(cfg: dict[str, Any], secret_keys: Iterable[str] = ()) -> ConfigError:
    """The ConfigError `cfg` is refused with (fails the test when it is accepted)."""
    from stacks.errors import ConfigError

    try:
        validate_values(cfg, secret_keys)
    except ConfigError as error:
        return error
    raise AssertionError("the config was accepted")


def assert_refused_at(cfg: dict[str, Any], path: str, rule: str, secret_keys: Iterable[str] = ()) -> ConfigError:
    """`cfg` is refused with an issue at `path` whose rule contains `rule`, and that says how to fix it."""
    error = refused(cfg, secret_keys)
    matching = [i for i in error.issues if i.path == path and rule in i.rule]
    assert matching, f"no issue at {path} with {rule!r}:\n{error}"
    assert matching[0].fix, "every issue says how to fix it"
    assert path in str(error) and "fix:" in str(error) and "Traceback" not in str(error)
    return error
