"""Which host directories the stack may bind into containers or have root write to.

One list for both places that judge a host path: the config rule on `hosts[].modelCachePath`,
`compileCachePath` and `provisioning.toolsVenv` (stacks/config.py), before anything is deployed,
and the policy pack's `no-sensitive-host-mounts` (policy/hardening.py), on every bind mount,
host-path volume and `local` volume bound through `driverOpts.device` the program declares.

Pure: no Pulumi, no I/O, so the bottom layer and the policy pack can both import it.
"""

from __future__ import annotations

import re

# Owned by the OS, the kernel or the container engine: a container that can write at or under
# one of these (the caches are mounted read-write while weights download, and storage.sh chowns
# them) can change the host itself. /var/run and /run hold the Docker socket; /var/lib/docker and
# /var/lib/containerd hold every container's root filesystem; /root is root's home (its
# ~/.ssh/authorized_keys). /lib32, /lib64 and /libx32 are the multilib siblings of /lib.
SYSTEM_ROOTS: tuple[str, ...] = (
    "/etc",
    "/proc",
    "/sys",
    "/boot",
    "/dev",
    "/usr",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/bin",
    "/sbin",
    "/run",
    "/var/run",
    "/root",
    "/var/lib/docker",
    "/var/lib/containerd",
)

# Shared by everything on the host: a dedicated directory under one is fine (`/var/lib/<app>`,
# `/srv/models`), the directory itself is not (chowning /home or binding all of /tmp).
BROAD_DIRS: tuple[str, ...] = (
    "/home",
    "/var",
    "/var/lib",
    "/var/tmp",
    "/var/log",
    "/var/cache",
    "/opt",
    "/srv",
    "/mnt",
    "/media",
    "/tmp",
    "/snap",
)

# Letters, digits and `._+-` between slashes: no whitespace, no shell metacharacters, no `:` or
# `,` (Docker's `-v src:dst:opts` and mount(8)'s option list split on them).
_SAFE = re.compile(r"/[A-Za-z0-9._+-]+(?:/[A-Za-z0-9._+-]+)*/?")
MAX_LENGTH = 1024


def normalized(path: str) -> str:
    """`path` without repeated or trailing slashes, as the kernel resolves it (`//` is `/`)."""
    collapsed = re.sub(r"/+", "/", path)
    return collapsed.rstrip("/") or "/"


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def sensitive_root(path: str) -> str | None:
    """The system root or broad directory that makes `path` unsafe to bind, or None.

    `path` is judged as written after `normalized`; one with a `.` or `..` component can point
    anywhere, so it counts as `/`."""
    path = normalized(path)
    if any(part in (".", "..") for part in path.split("/")):
        return "/"
    if path == "/":
        return "/"
    for root in SYSTEM_ROOTS:
        if under(path, root):
            return root
    return path if path in BROAD_DIRS else None


def host_path_problem(path: str) -> str | None:
    """Why `path` cannot hold a cache or venv on a host, or None. It reaches bash scripts as
    an argument (quoted, but checked again there), Docker as a bind source, and mount(2) as a
    `local` volume's `device`."""
    if not path.startswith("/"):
        return "must be absolute"
    if path == "/":
        return "is the host's root directory"
    if len(path) > MAX_LENGTH:
        return f"is longer than {MAX_LENGTH} characters"
    if "//" in path:
        return "has an empty component (`//`)"
    if not _SAFE.fullmatch(path):
        return "may hold only letters, digits, `.`, `_`, `+`, `-` and `/` (no whitespace or shell metacharacters)"
    if any(part in (".", "..") for part in path.split("/")):
        return "has a `.` or `..` component, so it can point anywhere"
    root = sensitive_root(path)
    if root in BROAD_DIRS:
        return f"is `{root}` itself, which the whole host shares"
    if root is not None:
        return f"is at or under `{root}`, which the OS or the container engine owns"
    return None
