"""A real Debian userland for tests of host scripts: built once with debootstrap, copied per test.

The host scripts run as root on Ubuntu/Debian GPU hosts and change /etc, apt state and Docker's config.
Running them in a chroot of a real Debian bookworm exercises the real bash, coreutils, python3 and
util-linux they meet on a host, while the machine-changing commands (apt-get, docker, systemctl, ...)
are stubs the tests put first on PATH.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.tools import require_tool

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "debian-rootfs"
SUITE = "bookworm"
INCLUDE = ("python3-minimal", "python3")
# The mirror can be overridden where deb.debian.org is not the reachable one.
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Changing what goes into the rootfs changes the stamp, which rebuilds it.
STAMP_TEXT = f"debootstrap --variant=minbase --include={','.join(INCLUDE)} {SUITE} {MIRROR}\n"
CHROOT_PATH = "/stubs:/usr/sbin:/usr/bin:/sbin:/bin"
BUILD_TIMEOUT = 540  # under pytest-timeout's 600 s, so this failure is the one reported


def _skip_or_fail(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_root() -> None:
    """chroot, device nodes and chown need root: a skip on a developer machine, a failure in CI."""
    if os.geteuid() != 0:
        _skip_or_fail("the Debian chroot tests need root (debootstrap, chroot)")


def _ensure_debootstrap() -> str:
    if shutil.which("debootstrap") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "debootstrap"]
        if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
            # A fresh machine may not have package lists yet.
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=600)
    return require_tool("debootstrap")


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive fcntl lock on `path` (created if missing): one builder at a time across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def debian_rootfs() -> Path:
    """The cached Debian bookworm minbase root (with python3), built on first use. Never modify it."""
    require_root()
    debootstrap = _ensure_debootstrap()
    root, stamp = CACHE / "root", CACHE / "stamp"
    with file_lock(CACHE.parent / "debian-rootfs.lock"):
        if stamp.is_file() and stamp.read_text() == STAMP_TEXT and (root / "usr/bin/python3").exists():
            return root
        partial = CACHE / "root.partial"
        for stale in (stamp, root, partial):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
        CACHE.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        command = [debootstrap, "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE, str(partial), MIRROR]
        result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            log = (result.stdout + result.stderr)[-3000:]
            pytest.fail(f"debootstrap failed (exit {result.returncode}):\n{log}")
        # Package caches are not needed by any test and would be copied into every per-test root.
        shutil.rmtree(partial / "var/cache/apt/archives", ignore_errors=True)
        (partial / "var/cache/apt/archives/partial").mkdir(parents=True)
        partial.rename(root)
        stamp.write_text(STAMP_TEXT)
        (CACHE / "build-seconds").write_text(f"{time.monotonic() - started:.1f}\n")
        return root


@contextmanager
def fresh_root(base: Path, workdir: Path) -> Iterator[Path]:
    """A private, writable view of `base` under `workdir`, so one test's changes never reach another's.

    An overlay mount (base as the read-only lower layer) costs milliseconds; where the kernel or a
    container refuses the mount, a full copy (~220 MB) stands in. Both are removed afterwards.
    """
    root, upper, work = workdir / "root", workdir / "upper", workdir / "work"
    for directory in (root, upper, work):
        directory.mkdir(parents=True)
    options = f"lowerdir={base},upperdir={upper},workdir={work}"
    mount = ["mount", "-t", "overlay", "overlay", "-o", options, str(root)]
    mounted = subprocess.run(mount, capture_output=True, timeout=60).returncode == 0
    if not mounted:
        root.rmdir()
        subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)], check=True, timeout=300)
    try:
        yield root
    finally:
        if mounted and subprocess.run(["umount", str(root)], capture_output=True, timeout=60).returncode != 0:
            subprocess.run(["umount", "--lazy", str(root)], capture_output=True, timeout=60)
        for directory in (root, upper, work):
            shutil.rmtree(directory, ignore_errors=True)


def install_scripts(root: Path, scripts: Sequence[Path]) -> None:
    """Copy host scripts into ROOT/scripts, where `run_script` reads them."""
    target = root / "scripts"
    target.mkdir(exist_ok=True)
    for script in scripts:
        shutil.copy2(script, target / script.name)


def run_script(
    root: Path,
    name: str,
    *args: str,
    stdin: bytes = b"",
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ROOT/scripts/NAME inside the chroot the way the Pulumi program runs it on a host.

    The program sends `sudo -n bash -c '<script text>' <script-name> ARG...`, so the script text is an
    argument, not a file: a script that leaned on its own path would pass `bash FILE` and fail there.
    `env -i` stands in for sudo's reset environment; only PATH (stubs first) and `env` are set.
    """
    text = (root / "scripts" / name).read_text()
    variables = [f"PATH={CHROOT_PATH}", *(f"{key}={value}" for key, value in (env or {}).items())]
    command = ["chroot", str(root), "/usr/bin/env", "-i", *variables, "bash", "-c", text, name, *args]
    result = subprocess.run(command, input=stdin, capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    )
