"""Validates the stack's raw config into a `StackConfig` and its placements, or stops with every
problem at once. Pure: the composition's loader reads the config and the model files and hands
them in, before any resource is registered, so a bad config never half-deploys.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError

from stacks import secrets
from stacks.config import SECRET_KEYS, StackConfig
from stacks.errors import (
    MAYBE_SECRET,
    NAMESPACE,
    SECRET_VALUE,
    ConfigError,
    ConfigIssue,
    Redacted,
    did_you_mean,
    field_aliases,
    issues_from_validation,
    missing,
    redact,
)
from stacks.model_files import ModelFiles
from stacks.placement import Placement
from stacks.rules import check
from stacks.stackfile import PLACEHOLDER

# Namespaces something in this program reads: ours, the providers' own settings, Pulumi's.
READ_NAMESPACES = {
    NAMESPACE: "this program",
    "docker": "the Docker provider",
    "command": "the Command provider",
    "random": "the Random provider",
    "pulumi": "the Pulumi engine",
}


# Top-level keys that hold one plain string, which the CLI hands over as it is, not as JSON.
SCALAR_KEYS = {"target"}


def split_config(config: dict[str, Any], secret: Iterable[str]) -> tuple[dict[str, Any], set[str], list[str]]:
    """Namespaced config (as the CLI hands it over) as our keys, which of them are secret, and
    the full names of the keys in other namespaces."""
    prefix = NAMESPACE + ":"
    values = {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
    secret_keys = {k[len(prefix) :] for k in secret if k.startswith(prefix)}
    return values, secret_keys, sorted(k for k in config if not k.startswith(prefix))


def _namespace_issues(foreign: Iterable[str]) -> list[ConfigIssue]:
    """A key in a namespace nothing reads is silently ignored: `inference-stak:redis` would
    leave Redis undeployed without a word."""
    issues = []
    for full in foreign:
        namespace, _, key = full.partition(":")
        if namespace in READ_NAMESPACES:
            continue
        close = difflib.get_close_matches(namespace, list(READ_NAMESPACES), n=1, cutoff=0.6)
        fix = (
            f"did you mean `{close[0]}:{key}`? Rename the key"
            if close
            else f"remove it; the namespaces read here are: {', '.join(sorted(READ_NAMESPACES))}"
        )
        issues.append(
            ConfigIssue(
                full,
                MAYBE_SECRET,
                f"nothing in this program reads the `{namespace}` namespace, so the key would be ignored",
                fix,
            )
        )
    return issues


# The secrets that hold a JSON map, each with its parser and an example for the fix.
_KEY_MAPS: dict[str, tuple[Callable[[object], dict[str, str]], str]] = {
    "gatewayApiKeys": (secrets.parse_client_keys, '{"team-a": "<key of 16+ characters>"}'),
    "weaviateApiKeys": (secrets.parse_weaviate_keys, '{"app": "<key of 16+ characters>"}'),
}


def _key_map_issues(key: str, value: Any) -> list[ConfigIssue]:
    """A key map is a secret, so problems name the rule but never echo a value."""
    parse, example = _KEY_MAPS[key]
    try:
        parse(value)
    except ValueError as err:
        rule = str(err).removeprefix(f"{key}: ")
        return [ConfigIssue(f"{NAMESPACE}:{key}", SECRET_VALUE, rule, f"pulumi config set --secret {key} '{example}'")]
    return []


def _secret_issues(key: str, value: Any, secret_keys: set[str]) -> list[ConfigIssue]:
    path = f"{NAMESPACE}:{key}"
    if key not in secret_keys:
        return [
            ConfigIssue(
                path,
                Redacted("(plain text, not shown)"),
                "secrets must be Pulumi secrets: a plain value sits unencrypted in the stack file and state",
                f"pulumi config rm {key} && pulumi config set --secret {key} <value>",
            )
        ]
    if key in _KEY_MAPS:
        return _key_map_issues(key, value)
    # Offline (render, policy) the plaintext is not there, only the stand-in for it.
    if not isinstance(value, str) or value == PLACEHOLDER:
        return []
    broken = secrets.problem(key, value)
    return [] if broken is None else [ConfigIssue(path, SECRET_VALUE, broken.rule, broken.fix.format(key=key))]


def _unknown_key_issue(key: str, value: Any, secret_keys: set[str], structured: list[str]) -> ConfigIssue:
    path = f"{NAMESPACE}:{key}"
    close = difflib.get_close_matches(key, structured + list(SECRET_KEYS), n=1, cutoff=0.6)
    if close and close[0] in SECRET_KEYS:
        fix = f"did you mean `{close[0]}`? `pulumi config rm {key}`, then `pulumi config set --secret {close[0]}`"
    else:
        fix = did_you_mean(key, structured + list(SECRET_KEYS))
    shown = SECRET_VALUE if key in secret_keys else MAYBE_SECRET
    return ConfigIssue(path, shown, "unknown key", fix)


def _kubeconfig_issues(cfg: StackConfig, given: bool) -> list[ConfigIssue]:
    """The `kubeconfig` secret is read exactly when the cluster says `kubeconfig: secret`."""
    wanted = cfg.kubernetes is not None and cfg.kubernetes.kubeconfig == "secret" and cfg.target == "kubernetes"
    if wanted == given:
        return []
    if wanted:
        return [
            ConfigIssue(
                f"{NAMESPACE}:kubeconfig",
                None,
                "`kubernetes.kubeconfig: secret` reaches the cluster with the `kubeconfig` secret, which is not set",
                'pulumi config set --secret kubeconfig "$(cat cluster-kubeconfig.yaml)", or use `kubeconfig: ambient`',
            )
        ]
    return [
        ConfigIssue(
            f"{NAMESPACE}:kubeconfig",
            SECRET_VALUE,
            "the `kubeconfig` secret is read only with `target: kubernetes` and `kubernetes.kubeconfig: secret`, "
            "so it would be ignored and the ambient kubeconfig used",
            "set `kubernetes.kubeconfig: secret`, or `pulumi config rm kubeconfig`",
        )
    ]


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith((r + ".", r + "[")) for r in roots)


def validate(
    stack: str,
    values: dict[str, Any],
    secret_keys: set[str],
    foreign: Iterable[str] = (),
    read_model_files: Callable[[StackConfig], ModelFiles] | None = None,
) -> tuple[StackConfig, list[Placement]]:
    """Validation of the raw key/value config. Raises ConfigError listing every problem.
    `read_model_files` is the loader's read of the models' cached files; without it nothing is
    read, and the checks that need a model's own `config.json` are skipped."""
    issues: list[ConfigIssue] = _namespace_issues(foreign)
    structured = field_aliases(StackConfig)
    data: dict[str, Any] = {}
    for key, value in sorted(values.items()):
        if key in SECRET_KEYS:
            issues += _secret_issues(key, value, secret_keys)
        elif key in structured:
            if key in secret_keys:
                issues.append(
                    ConfigIssue(
                        f"{NAMESPACE}:{key}",
                        SECRET_VALUE,
                        "a part of this key was set as a secret, but it is not a credential: the program "
                        "writes it into container config and state in plain text, so it cannot stay secret",
                        f"set it without --secret (`pulumi config set --path {key}.<field> <value>`); "
                        f"credentials go in the secret keys: {', '.join(SECRET_KEYS)}",
                    )
                )
            if key in SCALAR_KEYS:
                data[key] = value
                continue
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
            issues.append(_unknown_key_issue(key, value, secret_keys, structured))
    if data.get("target", "docker") == "docker" and "hosts" not in data:
        # Required for the default target only, so the schema itself cannot say it.
        issues.append(missing(("hosts",)))
    cfg: StackConfig | None = None
    try:
        cfg = StackConfig.model_validate(data)
    except ValidationError as error:
        issues += issues_from_validation(StackConfig, error)
    placements: list[Placement] = []
    if cfg is not None:
        placements, more = check(cfg, {} if read_model_files is None else read_model_files(cfg))
        issues += more + _kubeconfig_issues(cfg, "kubeconfig" in values)

    hidden = {f"{NAMESPACE}:{k}" for k in secret_keys}
    issues = [
        redact(i, hidden=any(i.path == h or i.path.startswith((h + ".", h + "[")) for h in hidden)) for i in issues
    ]
    if issues or cfg is None:
        raise ConfigError(stack, issues)
    return cfg, placements
