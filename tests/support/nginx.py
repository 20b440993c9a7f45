"""Debian's real nginx for the tests (tools/local_nginx.py runs it): missing nginx, unshare or root
is a skip on a developer machine and a failure under CI."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.tools import require_tool
from tools import local_nginx
from tools.local_nginx import Nginx


def require_nginx() -> str:
    nginx = require_tool("nginx")
    require_tool("unshare")
    if os.geteuid() != 0:
        message = "nginx tests need root for a private mount namespace"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return nginx


def nginx_test(
    root: Path, conf: str, secrets: dict[str, str], hosts: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the config as generated."""
    require_nginx()
    return local_nginx.nginx_test(root, conf, secrets, hosts)


@contextmanager
def run_nginx(root: Path, conf: str, secrets: dict[str, str], hosts: dict[str, str], port: int) -> Iterator[Nginx]:
    require_nginx()
    with local_nginx.run_nginx(root, conf, secrets, hosts, port) as nginx:
        yield nginx
