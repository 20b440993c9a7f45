"""The real Docker engine, for tests that create containers: skip locally, fail under CI=true."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.tools import require_tool


def require_engine() -> str:
    """Path of the docker CLI once `docker version` reaches an engine (`make test` starts one
    through scripts/docker-engine.sh)."""
    docker = require_tool("docker")
    probe = subprocess.run([docker, "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True)
    if probe.returncode != 0:
        message = f"no Docker engine answers ({probe.stderr.strip()[:200]}); run scripts/docker-engine.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return docker
