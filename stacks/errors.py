"""Config errors that say where, what, which rule and how to fix it, all at once."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
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
        shown = json.dumps(self.value, default=str) if self.value is not _MISSING else "(not set)"
        return f"  {self.path} = {shown}\n    rule: {self.rule}\n    fix:  {self.fix}"


_MISSING: Any = object()


class ConfigError(pulumi.RunError):
    """Raised before any resource is registered; Pulumi prints it without a traceback."""

    def __init__(self, stack: str, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        lines = [f"invalid config for stack '{stack}' ({len(issues)} problem{'s' if len(issues) > 1 else ''}):"]
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
            issues.append(ConfigIssue(key_path(loc), value, "unknown key", did_you_mean(str(loc[-1]), choices)))
        elif kind == "missing":
            issues.append(
                ConfigIssue(
                    key_path(loc), _MISSING, "required key is missing", "add it (see the README's config reference)"
                )
            )
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
