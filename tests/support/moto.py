"""A real `moto_server` subprocess on 127.0.0.1, for tests that talk S3 over HTTP."""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.tools import require_tool
from tools.local_nginx import free_port
from tools.processes import stop


def isolated_aws_env(home: Path, **extra: str) -> dict[str, str]:
    """A shell with no AWS config to fall back on and nothing proxied: only what the test gives."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
        **extra,
    }


@contextmanager
def moto_server(home: Path) -> Iterator[str]:
    """Starts moto_server, waits (30 s at most) until it answers, yields its URL, stops it."""
    exe = require_tool("moto_server")
    port = free_port()
    with open(home / "moto.log", "wb") as log:
        proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log, env=isolated_aws_env(home)
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (home / "moto.log").read_text()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not answer within 30s"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
