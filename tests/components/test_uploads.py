"""Uploads into read-only containers: the rule, the shipped stacks, and a real Docker engine."""

from __future__ import annotations

import io
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pulumi_docker as docker
import pytest

from components.uploads import upload_dirs, upload_volumes
from stacks.synth import Synth
from tests.support.docker_engine import require_engine

CONTAINER = "docker:index/container:Container"
LABEL = "inference-stack.test=uploads"


def test_fewest_directories_and_mounted_paths_left_out() -> None:
    files = ["/etc/nginx/nginx.conf", "/etc/nginx/inference-stack/clients.map", "/run/secrets/key"]
    assert upload_dirs(files) == ["/etc/nginx", "/run/secrets"]
    assert upload_dirs(files, mounted=["/run/secrets/"]) == ["/etc/nginx"]
    # A sibling with a common prefix is not "under" the other.
    assert upload_dirs(["/etc/app/a", "/etc/application/b"]) == ["/etc/app", "/etc/application"]
    volumes = upload_volumes([docker.ContainerUploadArgs(file="/etc/jaeger/config.yaml", content="x")])
    assert [v.container_path for v in volumes] == ["/etc/jaeger"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_read_only_container_receives_its_files_on_a_volume(stack: str, request: pytest.FixtureRequest) -> None:
    synth: Synth = request.getfixturevalue(stack)
    checked = 0
    for c in synth.of_type(CONTAINER):
        inputs = c["inputs"]
        if not inputs.get("readOnly") or not inputs.get("uploads"):
            continue
        roots = [v["containerPath"] for v in inputs.get("volumes", [])]
        roots += [m["target"] for m in inputs.get("mounts", []) if m["type"] in ("volume", "bind")]
        for upload in inputs["uploads"]:
            path = upload["file"]
            assert any(path.startswith(root.rstrip("/") + "/") for root in roots), (c["name"], path, roots)
        checked += 1
    assert checked >= 3  # the gateway, Prometheus and Jaeger at least


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def probe_image() -> Iterator[str]:
    """A one-file image: `docker create` needs an image, never a runnable one."""
    docker_cli = require_engine()
    tag = f"inference-stack-test/uploads:{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [docker_cli, "import", "--change", "LABEL " + LABEL, "-", tag],
        input=_tar({"etc/app/default.conf": b"from the image\n"}),
        check=True,
        capture_output=True,
    )
    yield tag
    subprocess.run([docker_cli, "rmi", "-f", tag], capture_output=True)


def _copy_into(docker_cli: str, image: str, create_args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    source = tmp_path / "app.conf"
    source.write_text("uploaded\n")
    created = subprocess.run(
        [docker_cli, "create", "--label", LABEL, "--read-only", *create_args, image, "/none"],
        capture_output=True,
        text=True,
        check=True,
    )
    container = created.stdout.strip()
    try:
        return subprocess.run(
            [docker_cli, "cp", str(source), f"{container}:/etc/app/app.conf"], capture_output=True, text=True
        )
    finally:
        subprocess.run([docker_cli, "rm", "-v", container], capture_output=True)


def test_docker_refuses_a_read_only_rootfs_but_takes_the_upload_volume(probe_image: str, tmp_path: Path) -> None:
    """What pulumi-docker does for `uploads` (copy into the created container), on a real engine:
    refused on a read-only root filesystem, accepted into the anonymous volume upload_volumes adds."""
    docker_cli = require_engine()
    refused = _copy_into(docker_cli, probe_image, [], tmp_path)
    assert refused.returncode != 0 and "read-only" in refused.stderr, refused
    (volume,) = upload_volumes([docker.ContainerUploadArgs(file="/etc/app/app.conf", content="")])
    accepted = _copy_into(docker_cli, probe_image, ["--volume", str(volume.container_path)], tmp_path)
    assert accepted.returncode == 0, accepted.stderr
