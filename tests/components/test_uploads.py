"""Uploads and read-only root filesystems, on a real Docker engine.

pulumi-docker delivers `uploads` the way kreuzwerker/terraform-provider-docker does: after
creating the container it sends a tar whose entry is the file's full path and extracts it at
"/" (`CopyToContainer(ctx, id, "/", ...)` in resource_docker_container_funcs.go). Docker refuses
that on a read-only root filesystem ("container rootfs is marked read-only"), even when the file
would land on a volume. So no container that receives uploads may be read-only.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import uuid
from collections.abc import Iterator

import pytest

from tests.support.docker_engine import require_engine
from tools.synth import Synth

CONTAINER = "docker:index/container:Container"
LABEL = "inference-stack.test=uploads"


def provider_tar(path: str, content: bytes) -> bytes:
    """The archive the provider sends: one entry named by the file's full path."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(path)
        info.size, info.mode = len(content), 0o444
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def probe_image() -> Iterator[str]:
    """A one-file image: `docker create` needs an image, never a runnable one."""
    docker = require_engine()
    tag = f"inference-stack-test/uploads:{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [docker, "import", "-", tag],
        input=provider_tar("etc/app/default.conf", b"x\n"),
        check=True,
        capture_output=True,
    )
    yield tag
    subprocess.run([docker, "rmi", "-f", tag], capture_output=True)


def upload_like_the_provider(image: str, create_args: list[str]) -> subprocess.CompletedProcess[bytes]:
    docker = require_engine()
    created = subprocess.run(
        [docker, "create", "--label", LABEL, *create_args, image, "/none"], capture_output=True, text=True, check=True
    )
    container = created.stdout.strip()
    try:
        # `docker cp - CONTAINER:/` extracts a tar stream at "/", as CopyToContainer(id, "/") does.
        return subprocess.run(
            [docker, "cp", "-", f"{container}:/"],
            input=provider_tar("etc/app/app.conf", b"uploaded\n"),
            capture_output=True,
        )
    finally:
        subprocess.run([docker, "rm", "-v", container], capture_output=True)


def test_docker_refuses_the_providers_upload_into_a_read_only_rootfs(probe_image: str) -> None:
    refused = upload_like_the_provider(probe_image, ["--read-only"])
    assert refused.returncode != 0 and b"read-only" in refused.stderr, refused
    # A volume at the file's directory does not help: the extraction point is "/".
    still = upload_like_the_provider(probe_image, ["--read-only", "--volume", "/etc/app"])
    assert still.returncode != 0 and b"read-only" in still.stderr, still
    accepted = upload_like_the_provider(probe_image, [])
    assert accepted.returncode == 0, accepted.stderr


@pytest.mark.parametrize("stack", ["dev", "prod", "ci"])
def test_no_container_that_receives_uploads_is_read_only(stack: str, request: pytest.FixtureRequest) -> None:
    from tools.synth import synth_stack

    synth: Synth = request.getfixturevalue(stack) if stack != "ci" else synth_stack("ci")
    with_uploads = [c for c in synth.of_type(CONTAINER) if c["inputs"].get("uploads")]
    assert with_uploads
    for c in with_uploads:
        assert not c["inputs"].get("readOnly"), f"{c['name']} is read-only and receives uploads: Docker refuses them"
