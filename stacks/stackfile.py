"""Reads a `Pulumi.<stack>.yaml` strictly, into the config the Pulumi CLI would hand the program.

PyYAML keeps the last of two equal keys and turns a stack file that is a list into a list; both
would reach the program as a silently different config. Here either is a `ConfigError` naming
the line, so `make render`, `make policy` and `make up` stop before anything is registered.

`secure:` values stay encrypted: the program sees a placeholder shaped like the real value,
still marked secret. A `secure:` leaf under a nested key (what `pulumi config set --secret
--path` writes) makes the whole top-level key secret, as the CLI does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stacks.errors import NAMESPACE, ConfigError, ConfigIssue, Redacted, did_you_mean

# Stand-ins for `secure:` values, shaped like the real ones so the program runs; every input
# derived from them is still a secret and is written out as "[secret]".
PLACEHOLDERS = {
    f"{NAMESPACE}:gatewayApiKeys": '{"synth-client": "synth-placeholder-client-key"}',
    f"{NAMESPACE}:weaviateApiKeys": '{"synth-user": "synth-placeholder-weaviate-key"}',
}
PLACEHOLDER = "synth-placeholder-secret-value"
"""A `secure:` leaf's stand-in: long enough for every secret's grammar, never a real value."""


# The top-level keys of a stack file (ProjectStack in the Pulumi SDK's
# sdk/go/common/workspace/project.go): anything else is ignored by the CLI.
STACK_FILE_KEYS = ("config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment")


def _duplicates(node: yaml.Node, path: str, found: list[tuple[str, int, int]]) -> None:
    """Every mapping key given twice under `node`, as (key path, first line, second line)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                found.append((_join(path, key), seen[key], line))
            seen.setdefault(key, line)
            _duplicates(value_node, _join(path, key), found)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _duplicates(item, f"{path}[{index}]", found)


def _join(path: str, key: str) -> str:
    # Under `config:` the path reads as the key path errors use: `inference-stack:hosts[0].name`.
    if path == "config":
        return key
    return f"{path}.{key}" if path else key


def _problem(path: str, rule: str, fix: str, shown: str = "(the file)") -> ConfigIssue:
    # Described, never quoted: a value in a broken file may be a secret.
    return ConfigIssue(path, Redacted(shown), rule, fix)


def parse(text: str, name: str) -> dict[str, Any]:
    """The stack file as a mapping with a `config:` mapping, or a ConfigError saying why not."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            name,
            [_problem(name, f"not valid YAML: {problem} at {where}", "fix the YAML there", "(unparsable)")],
            what="stack file",
        ) from None
    duplicates: list[tuple[str, int, int]] = []
    if root is not None:
        _duplicates(root, "", duplicates)
    issues = [
        _problem(
            key if ":" in key.split(".")[0] else f"{name}: {key}",
            f"the key is given twice in {name} (lines {first} and {again}); YAML keeps only the last, silently",
            f"keep one `{key.rsplit('.', 1)[-1]}:` and merge what the other said into it",
            "(given twice)",
        )
        for key, first, again in duplicates
    ]
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        issues.append(
            _problem(
                name,
                f"a stack file is a mapping with a `config:` key, not a {_kind(doc)}",
                "start the file with `config:` and indent the keys under it (see Pulumi.dev.yaml)",
                "(not a mapping)",
            )
        )
    elif unknown := [k for k in doc if k not in STACK_FILE_KEYS]:
        issues += [
            _problem(
                f"{name}: {key}",
                "not a stack file key: Pulumi reads only "
                + ", ".join(f"`{k}`" for k in STACK_FILE_KEYS)
                + ", so everything under it would be ignored",
                did_you_mean(str(key), list(STACK_FILE_KEYS)).replace("Rename the key", "Rename it")
                + (" (config keys go under `config:`)" if ":" in str(key) else ""),
                "(ignored)",
            )
            for key in unknown
        ]
    elif not isinstance(doc.get("config", {}) or {}, dict):
        issues.append(
            _problem(
                f"{name}: config",
                f"`config:` holds `<namespace>:<key>: value` pairs, not a {_kind(doc['config'])}",
                "write each key as `inference-stack:<key>: ...` indented under `config:`, without a leading `-`",
                "(not a mapping)",
            )
        )
    if issues:
        raise ConfigError(name, issues, what="stack file")
    mapping: dict[str, Any] = doc
    return mapping


def _kind(value: Any) -> str:
    return "list" if isinstance(value, list) else f"single value ({type(value).__name__})"


def _has_secure(value: Any) -> bool:
    if isinstance(value, dict):
        return set(value) == {"secure"} or any(_has_secure(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_secure(v) for v in value)
    return False


def _stand_in(value: Any, count: list[int]) -> Any:
    """The value with each nested `secure:` leaf replaced by a placeholder of its own (two
    client keys must not look equal)."""
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            count[0] += 1
            return f"{PLACEHOLDER}-{count[0]}"
        return {k: _stand_in(v, count) for k, v in value.items()}
    if isinstance(value, list):
        return [_stand_in(v, count) for v in value]
    return value


@dataclass(frozen=True)
class StackFile:
    config: dict[str, str]
    """Namespaced keys, structured values as JSON, secrets as placeholders."""
    secret_keys: list[str] = field(default_factory=list)
    """Keys whose value (or a part of it) is `secure:`."""


def read(path: Path) -> StackFile:
    """Config as the Pulumi CLI hands it to a program: namespaced keys, JSON for structured
    values, and the list of secret keys (whose values stay encrypted, so a placeholder)."""
    doc = parse(_text(path), path.name)
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in (doc.get("config") or {}).items():
        full = str(key) if ":" in str(key) else f"{NAMESPACE}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            config[full] = PLACEHOLDERS.get(full, PLACEHOLDER)
            secret_keys.append(full)
        elif _has_secure(value):
            config[full] = json.dumps(_stand_in(value, [0]))
            secret_keys.append(full)
        elif isinstance(value, str):
            config[full] = value
        else:
            config[full] = json.dumps(value)
    return StackFile(config, secret_keys)


def read_stack_file(path: Path) -> tuple[dict[str, str], list[str]]:
    """`read`, as the (config, secret keys) pair the synth's `run` takes."""
    stack_file = read(path)
    return stack_file.config, stack_file.secret_keys


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "it is not UTF-8 text"
        raise ConfigError(
            path.name,
            [_problem(str(path), f"cannot read the stack file: {reason}", "check the path and save it as UTF-8")],
            what="stack file",
        ) from None


def config_of(path: Path) -> dict[str, Any]:
    """The parsed `config:` mapping of a stack file (for tools that read it as YAML)."""
    config = parse(_text(path), path.name).get("config") or {}
    assert isinstance(config, dict)
    return config
