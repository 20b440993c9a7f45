"""Config errors that say where, what, which rule and how to fix it, all at once."""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, replace
from typing import Any

import pulumi
from pydantic import BaseModel, ValidationError

NAMESPACE = "inference-stack"


@dataclass(frozen=True)
class ConfigIssue:
    path: str
    """Full key path as a user would type it, e.g. `inference-stack:workers[0].image`."""
    value: Any
    rule: str
    fix: str

    def render(self) -> str:
        if self.value is _MISSING:
            shown = "(not set)"
        elif isinstance(self.value, Redacted):
            shown = str(self.value)
        else:
            shown = json.dumps(self.value, default=str)
        return f"  {self.path} = {shown}\n    rule: {self.rule}\n    fix:  {self.fix}"


_MISSING: Any = object()


class Redacted(str):
    """Shown in place of a value that must not be echoed (a secret, or what may be one)."""


SECRET_VALUE = Redacted("(secret, not shown)")
MAYBE_SECRET = Redacted("(not shown: a value under an unknown key may be a secret)")
# Field names that hold credentials wherever they appear: a value under such a key is never shown.
_SECRET_NAME = re.compile(r"(?i)pass(word|wd|phrase)|secret|token|credential|private_?key|api_?keys?|access_?key")


def looks_secret(key: str) -> bool:
    return bool(_SECRET_NAME.search(key))


def redact(issue: ConfigIssue, hidden: bool = False) -> ConfigIssue:
    """The issue with its value hidden when it sits under a secret-looking key, or `hidden`."""
    names = re.split(r"[.:\[\]]", issue.path)
    if issue.value is _MISSING or isinstance(issue.value, Redacted):
        return issue
    if hidden or any(looks_secret(n) for n in names if n):
        return replace(issue, value=SECRET_VALUE)
    return issue


class ConfigError(pulumi.RunError):
    """Raised before any resource is registered; Pulumi prints it without a traceback."""

    def __init__(self, stack: str, issues: list[ConfigIssue], what: str = "config for stack") -> None:
        self.issues = issues
        lines = [f"invalid {what} '{stack}' ({len(issues)} problem{'s' if len(issues) > 1 else ''}):"]
        lines += [issue.render() for issue in issues]
        super().__init__("\n".join(lines))


def key_path(loc: tuple[str | int, ...]) -> str:
    out = f"{NAMESPACE}:{loc[0]}" if loc else NAMESPACE
    for part in loc[1:]:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`? Rename the key"
    return f"remove it; valid keys here are: {', '.join(sorted(choices))}"


def field_aliases(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def model_at(root: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The schema model that holds the key at `loc`, so an unknown key can be matched against
    its real siblings."""
    current: type[BaseModel] = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        by_alias = {f.alias or n: f for n, f in current.model_fields.items()}
        field = by_alias.get(part)
        if field is None:
            return None
        nested = _model_in(field.annotation)
        if nested is None:
            return None
        current = nested
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def missing(loc: tuple[str | int, ...]) -> ConfigIssue:
    return ConfigIssue(key_path(loc), _MISSING, "required key is missing", "add it (see the README's config reference)")


def issues_from_validation(root: type[BaseModel], error: ValidationError) -> list[ConfigIssue]:
    issues = []
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        value = err.get("input", _MISSING)
        kind = err["type"]
        ctx = err.get("ctx") or {}
        if kind == "rule":
            issues.append(ConfigIssue(key_path(loc), value, ctx["rule"], ctx["fix"]))
        elif kind == "extra_forbidden":
            parent = model_at(root, loc)
            choices = field_aliases(parent) if parent else []
            shown = value if isinstance(value, (int, float, bool)) or value is None else MAYBE_SECRET
            issues.append(ConfigIssue(key_path(loc), shown, "unknown key", did_you_mean(str(loc[-1]), choices)))
        elif kind == "missing":
            issues.append(missing(loc))
        elif kind == "literal_error":
            issues.append(ConfigIssue(key_path(loc), value, err["msg"], f"use one of {ctx.get('expected')}"))
        elif kind == "string_pattern_mismatch":
            issues.append(
                ConfigIssue(
                    key_path(loc),
                    value,
                    f"must match {ctx.get('pattern')}",
                    "see the README's config reference for the format",
                )
            )
        else:
            issues.append(
                ConfigIssue(key_path(loc), value, err["msg"], "correct the value (see the README's config reference)")
            )
    return issues
