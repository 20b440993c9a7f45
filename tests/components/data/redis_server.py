"""A real `redis-server` on the generated config, and a raw RESP client to talk to it.

The config is `render_redis_conf` with the data dir and ACL file pointed into a temp dir (its own
parameters), and only two lines adapted for a test host: `port` (a free port instead of 6379)
and `bind` (127.0.0.1 instead of `0.0.0.0 -::*`, so nothing listens beyond loopback).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.data.redis import render_acl, render_redis_conf
from stacks.config import RedisConfig

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
REPLY_TIMEOUT = 10.0
ADAPTED = {"port", "bind"}
"""The only lines of the rendered config a test replaces (besides `dir` and the ACL `include`,
which `render_redis_conf` itself takes as parameters)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def adapt_conf(text: str, port: int) -> str:
    """The rendered config with `port` and `bind` replaced, each exactly once."""
    out, seen = [], []
    for line in text.splitlines():
        key = line.split(" ", 1)[0]
        if key == "port":
            line = f"port {port}"
            seen.append(key)
        elif key == "bind":
            line = "bind 127.0.0.1"
            seen.append(key)
        out.append(line)
    assert sorted(seen) == sorted(ADAPTED), f"expected one `port` and one `bind` line, saw {seen}"
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class RespError:
    """An error reply (`-ERR …`, `-NOAUTH …`), returned rather than raised so tests can assert on it."""

    message: str

    @property
    def code(self) -> str:
        return self.message.split(" ", 1)[0]


class Resp:
    """A minimal RESP2 client: enough for AUTH, SET/GET, CONFIG GET and pipelined batches."""

    def __init__(self, port: int, timeout: float = REPLY_TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = self.sock.makefile("rb")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
            self.sock.close()

    def __enter__(self) -> Resp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def encode(*args: str | bytes | int) -> bytes:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(parts)

    def read(self) -> Any:
        line = self.reader.readline()
        if not line:
            raise ConnectionError("connection closed by the server")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode()
        if kind == b"-":
            return RespError(body.decode())
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            if size < 0:
                return None
            data = self.reader.read(size + 2)[:-2]
            return data.decode()
        if kind == b"*":
            count = int(body)
            return None if count < 0 else [self.read() for _ in range(count)]
        raise ValueError(f"unexpected RESP line {line!r}")

    def call(self, *args: str | bytes | int) -> Any:
        self.sock.sendall(self.encode(*args))
        return self.read()

    def pipeline(self, commands: list[tuple[str | bytes | int, ...]]) -> list[Any]:
        self.sock.sendall(b"".join(self.encode(*c) for c in commands))
        return [self.read() for _ in commands]


@dataclass
class RedisServer:
    """One redis-server process on a generated config in `root`; restartable on the same files."""

    exe: str
    cfg: RedisConfig
    password: str
    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def acl_file(self) -> Path:
        return self.root / "secrets" / "redis-acl.conf"

    @property
    def conf_file(self) -> Path:
        return self.root / "redis.conf"

    @property
    def log_file(self) -> Path:
        return self.root / "redis.log"

    def rendered(self) -> str:
        return render_redis_conf(self.cfg, data_dir=str(self.data_dir), acl_file=str(self.acl_file))

    def write_files(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.acl_file.parent.mkdir(parents=True, exist_ok=True)
        self.acl_file.write_text(render_acl(self.password))
        self.acl_file.chmod(0o400)
        self.conf_file.write_text(adapt_conf(self.rendered(), self.port))

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if self.starts == 0:
            self.write_files()
        self.starts += 1
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [self.exe, str(self.conf_file)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.proc.poll() is None, f"redis-server exited {self.proc.returncode}:\n{self.log()}"
            try:
                with Resp(self.port, timeout=2) as client:
                    # Auth is checked before loading: after AUTH, PING answers LOADING until the
                    # AOF is read back.
                    if client.call("AUTH", self.password) == "OK" and client.call("PING") == "PONG":
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"redis-server not ready within {START_TIMEOUT}s:\n{self.log()}"
            time.sleep(0.02)

    def client(self, authenticated: bool = True) -> Resp:
        client = Resp(self.port)
        if authenticated:
            assert client.call("AUTH", self.password) == "OK"
        return client

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT)

    def shutdown(self) -> None:
        """A clean `SHUTDOWN` (what `docker stop`'s SIGTERM amounts to)."""
        assert self.proc is not None
        with self.client() as client, contextlib.suppress(ConnectionError, OSError):
            client.call("SHUTDOWN")
        self.proc.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
