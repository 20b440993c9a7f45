"""Uploaded files in containers whose root filesystem is read-only.

Docker refuses to copy into a read-only container ("container rootfs is marked read-only"), even
into a tmpfs path, unless the destination lies on a volume (moby's archive code checks for that,
and `tests/test_uploads.py` shows both on a real engine). Pulumi uploads files by copying them in
after the container is created, so every directory a read-only container receives files in is an
anonymous volume: Docker fills it from the image's own directory first, the upload overwrites
what it brings, and `remove_volumes` (on by default) deletes it with the container.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence

import pulumi_docker as docker


def upload_dirs(files: Iterable[str], mounted: Iterable[str] = ()) -> list[str]:
    """The fewest directories that hold every file, leaving out files already under a mount."""
    mounts = [m.rstrip("/") for m in mounted]

    def under(path: str, root: str) -> bool:
        return path == root or path.startswith(root + "/")

    dirs = sorted({posixpath.dirname(f) for f in files if not any(under(f, m) for m in mounts)})
    return [d for d in dirs if not any(under(d, other) and d != other for other in dirs)]


def upload_volumes(
    uploads: Sequence[docker.ContainerUploadArgs], mounted: Iterable[str] = ()
) -> list[docker.ContainerVolumeArgs]:
    """Anonymous volumes for the directories `uploads` write to (see the module's docstring)."""
    files = []
    for upload in uploads:
        if not isinstance(upload.file, str):
            raise TypeError("upload paths must be plain strings, known before the container exists")
        files.append(upload.file)
    return [docker.ContainerVolumeArgs(container_path=d) for d in upload_dirs(files, mounted)]
