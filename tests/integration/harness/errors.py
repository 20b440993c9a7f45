"""What the harness raises: a failure the real provider would also have, or one the harness cannot
map (an unknown input or resource type), so nothing a program sets is silently dropped."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.integration.harness.state import Applied


class HarnessError(RuntimeError):
    """Something the real provider would also have failed on, or the harness cannot do."""

    applied: Applied | None = None
    """What `apply` had created when it failed, for a cleanup limited to it (`teardown(only=...)`)."""


class UnmappedInputError(HarnessError):
    """A resource input with no mapping to the Engine API."""


class UnknownResourceTypeError(HarnessError):
    """A resource type the harness neither applies nor knowingly skips."""


class EngineError(HarnessError):
    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status


class GateFailedError(HarnessError):
    """The canary gate failed; `report` is what it printed."""

    def __init__(self, message: str, report: str) -> None:
        super().__init__(message)
        self.report = report
