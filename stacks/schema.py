"""The base of every stack-config model: strict, camelCase keys, unknown keys refused, and
errors that carry the rule and the fix (`stacks.errors` turns them into config issues)."""

from __future__ import annotations

import types
import typing
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

# Upper bounds that no host or GPU reaches today: above them a number is a typo (MiB read as
# bytes, an extra zero), not a size.
MAX_MEMORY_MB = 16 * 1024 * 1024


MAX_GPU_MEMORY_MIB = 1024 * 1024


NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$"


def rule_error(rule: str, fix: str) -> PydanticCustomError:
    """A validation error whose message carries the rule and the fix, for `stacks.errors`."""
    return PydanticCustomError("rule", "{rule}", {"rule": rule, "fix": fix})


class Schema(BaseModel):
    # Strict: pydantic's lax mode reads `true` as 1 and `"8"` as 8, so a boolean where a count
    # belongs would deploy one of something. Strict floats still take ints (`cpus: 2`).
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        use_attribute_docstrings=True,
        strict=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _checked_defaults_by_key(cls, data: object) -> object:
        """A default that a cross-field rule checks (`validate_default`) is written in under its
        key, so an error about it names the key the user would add (`memoryMb`), not the Python
        name pydantic would put in its location (`memory_mb`)."""
        if not isinstance(data, dict):
            return data
        missing = {
            f.alias: f.default
            for name, f in cls.model_fields.items()
            if f.validate_default and f.alias and f.alias not in data and name not in data
        }
        return {**data, **missing} if missing else data

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: object, info: ValidationInfo) -> object:
        """The message strict mode would give (`Input should be a valid integer`), with the reason
        and the fix, for the number fields; nested lists of numbers fall back to strict mode's."""
        kind = _number_kind(cls.model_fields[info.field_name or ""].annotation)
        if kind is None or value is None:
            return value
        if isinstance(value, bool):
            raise rule_error(
                f"{kind} belongs here, not a boolean: `{str(value).lower()}` is not read as 1 or 0",
                "write the number itself",
            )
        if isinstance(value, str):
            # `pulumi config set --path` stores decimals as strings unless told otherwise (its
            # `--help`: "integers are treated as numbers. All other values are treated as strings").
            raise rule_error(
                f"{kind} belongs here, not a string",
                "write it unquoted; with `pulumi config set --path`, add `--type float` (or `--type int`)",
            )
        if kind == "a whole number" and isinstance(value, float):
            raise rule_error(f"{kind} belongs here, not a fraction", f"write a whole number, e.g. `{round(value)}`")
        return value


def _number_kind(annotation: object) -> str | None:
    """`a whole number` for int fields, `a number` for float ones (optional or not), else None."""
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    options = options or (annotation,)
    if int in options:
        return "a whole number"
    if float in options:
        return "a number"
    return None


Name = Annotated[str, Field(pattern=NAME_PATTERN)]
