"""Runs Debian's real nginx on a generated config, unmodified.

The config names upstreams by container name and includes secrets from /etc/nginx/inference-
stack, as in the gateway container. A private mount namespace gives nginx exactly that: the
rendered files bind-mounted over /etc/nginx, an /etc/hosts that maps the upstream names to
loopback addresses the tests choose, and a private /tmp for nginx's pid and temp files.

Needs nginx, unshare and root; the tests' tests/support/nginx.py turns their absence into a skip
(or a CI failure) before calling here, the gateway benchmark states it as a prerequisite.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_tree(root: Path, conf: str, secrets: dict[str, str], hosts: dict[str, str]) -> tuple[Path, Path]:
    etc = root / "etc-nginx"
    (etc / "inference-stack").mkdir(parents=True, exist_ok=True)
    (etc / "nginx.conf").write_text(conf)
    for name, text in secrets.items():
        # Nested names too: the member files under members/<pool>/ (components/gateway/members.py).
        (etc / "inference-stack" / name).parent.mkdir(parents=True, exist_ok=True)
        (etc / "inference-stack" / name).write_text(text)
    hosts_file = root / "hosts"
    write_hosts(hosts_file, hosts)
    return etc, hosts_file


def write_hosts(path: Path, hosts: dict[str, str]) -> None:
    # Same inode: the bind mount inside the namespace sees the new mapping.
    with open(path, "w") as handle:
        handle.write("127.0.0.1 localhost\n" + "".join(f"{ip} {name}\n" for name, ip in sorted(hosts.items())))


def _namespace_command(etc: Path, hosts_file: Path, nginx_args: str) -> list[str]:
    script = (
        f"mount --bind {etc} /etc/nginx && mount --bind {hosts_file} /etc/hosts && "
        f"mount -t tmpfs tmpfs /tmp && exec nginx -c /etc/nginx/nginx.conf {nginx_args}"
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def nginx_test(
    root: Path, conf: str, secrets: dict[str, str], hosts: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the config as generated."""
    etc, hosts_file = write_tree(root, conf, secrets, hosts)
    return subprocess.run(_namespace_command(etc, hosts_file, "-t"), capture_output=True, text=True, timeout=30)


@dataclass
class Nginx:
    process: subprocess.Popen[str]
    port: int
    hosts_file: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def remap(self, hosts: dict[str, str]) -> None:
        write_hosts(self.hosts_file, hosts)

    def reload(self) -> None:
        """What the gateway's reload step does: SIGHUP to the master, which starts new workers on
        the re-read config and lets the old ones finish their streams."""
        self.process.send_signal(signal.SIGHUP)


@contextmanager
def run_nginx(root: Path, conf: str, secrets: dict[str, str], hosts: dict[str, str], port: int) -> Iterator[Nginx]:
    etc, hosts_file = write_tree(root, conf, secrets, hosts)
    log = root / "nginx.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            _namespace_command(etc, hosts_file, "-g 'daemon off;'"), stdout=out, stderr=subprocess.STDOUT, text=True
        )
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"nginx did not listen on {port}:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.05)
    try:
        yield Nginx(process, port, hosts_file, log)
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
