"""Integration tests create real containers; the `integration` marker lets `-m "not integration"`
leave them out of a quick run."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: creates containers on the real Docker engine")
