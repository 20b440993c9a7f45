"""The Docker Engine API over its unix socket, and the labels the harness puts on all it creates
(a teardown removes what carries them, and nothing else)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.integration.harness.errors import EngineError

REPO = Path(__file__).resolve().parents[3]
TEST_LABEL = "inference-stack.test"
TEST_VALUE = "integration"
RESOURCE_LABEL = "inference-stack.test.resource"
GRACE_LABEL = "inference-stack.test.destroy-grace-seconds"
SOCKET = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def api(
    method: str,
    path: str,
    body: Any = None,
    *,
    params: dict[str, str] | None = None,
    raw: bytes | None = None,
    content_type: str = "application/json",
    ok: Iterable[int] = (200, 201, 204, 304),
    timeout: float = 120,
) -> Any:
    """One Engine API call; JSON in and out. Raises EngineError with the daemon's message."""
    url = path + ("?" + urllib.parse.urlencode(params) if params else "")
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn = _UnixConnection(SOCKET, timeout)
    try:
        headers = {"Content-Type": content_type} if data is not None else {}
        conn.request(method, url, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    if response.status not in tuple(ok):
        try:
            message = json.loads(payload).get("message", payload.decode(errors="replace"))
        except ValueError:
            message = payload.decode(errors="replace")
        raise EngineError(method, path, response.status, message)
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace")


def api_version() -> tuple[int, int]:
    version = api("GET", "/version")["ApiVersion"]
    major, minor = version.split(".")
    return int(major), int(minor)


def get_or_none(path: str) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = api("GET", path)
    except EngineError as err:
        if err.status == 404:
            return None
        raise
    return result


def labelled(kind: str) -> list[dict[str, Any]]:
    filters = json.dumps({"label": [f"{TEST_LABEL}={TEST_VALUE}"]})
    params = {"filters": filters, **({"all": "1"} if kind == "containers" else {})}
    result = api("GET", f"/{kind}" + ("/json" if kind == "containers" else ""), params=params)
    if kind == "volumes":
        return list(result.get("Volumes") or [])
    return list(result)


def logs_tail(container: str, lines: int = 60) -> str:
    result = subprocess.run(
        ["docker", "logs", "--tail", str(lines), container], capture_output=True, text=True, check=False
    )
    return (result.stdout + result.stderr)[-8000:]


# The harness's own labels: not program inputs, so not part of the provider's read-back either.
HARNESS_LABELS = (TEST_LABEL, RESOURCE_LABEL, GRACE_LABEL)


def inspect(name_or_id: str) -> dict[str, Any]:
    """`docker inspect` of a container."""
    result: dict[str, Any] = api("GET", f"/containers/{urllib.parse.quote(name_or_id)}/json")
    return result
