"""Finding the real consumers tests run: skip on a developer machine, fail under CI."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def require_tool(name: str) -> str:
    """Path of `name` on PATH or in the venv; a missing tool is a skip locally, a failure in CI."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found:
        return found
    message = f"`{name}` is not installed; `make test` installs it"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
