"""s3_sync.py against moto: in-process (`mock_aws`, calling `main`) and as the host runs it, a
`python3 -c <source> s3_sync.py` subprocess talking to a real `moto_server` on 127.0.0.1.

Most cases run on both backends (the `registry` fixture); the ones that watch the wire (Range
headers, a body stream cut mid-way) run in-process, where botocore's event hooks can see it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import json
import random
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import ResponseStreamingError  # type: ignore[import-untyped]
from moto import mock_aws

from components import inline
from tests.support.moto import isolated_aws_env
from tests.support.moto import moto_server as start_moto_server

# What the host runs: a shipped file, loaded here from its path as `python3 -c` would run it.
SCRIPT = Path(__file__).resolve().parents[3] / "components" / "hosts" / "scripts" / "s3_sync.py"
SOURCE = SCRIPT.read_text()


def shipped_module(path: Path) -> ModuleType:
    """The shipped file as a module, registered under its stem (its dataclasses look it up there)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


s3_sync = shipped_module(SCRIPT)
PREFIX = "models/org/tiny"
CREDS = {
    "aws_access_key_id": "AKIASYNCTESTKEY12345",
    "aws_secret_access_key": "s3cr3t/SyncTest+NeverPrint0123456789abcd",
    "aws_session_token": "sess10nT0kenNeverPrint",
}
BIG = "model.safetensors"
BIG_BYTES = random.Random(1234).randbytes(2 * 1024 * 1024 + 12345)
FILES: dict[str, bytes] = {
    "config.json": b'{"architectures": ["LlamaForCausalLM"], "hidden_size": 64}\n',
    "tokenizer.json": json.dumps({"model": {"vocab": {f"t{i}": i for i in range(500)}}}).encode(),
    BIG: BIG_BYTES,
    "nested/dir/tokenizer_config.json": b'{"model_max_length": 2048}\n',
    "empty.txt": b"",
}
RUN_TIMEOUT = 60


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_for(files: dict[str, bytes]) -> dict[str, Any]:
    return {"files": [{"path": p, "size": len(d), "sha256": sha(d)} for p, d in files.items()]}


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def partial_path(dest: Path, path: str) -> Path:
    """Where an interrupted download of `path` waits to be resumed."""
    return dest.parent / s3_sync.PARTIAL_DIR / dest.name / f"{path}.{sha(FILES[path])[:16]}.part"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def bytes_downloaded(self) -> int:
        match = re.search(r"^summary: .*\bbytes_downloaded=(\d+)$", self.out, re.MULTILINE)
        assert match, f"no summary line in {self.out!r} (stderr {self.err!r})"
        return int(match.group(1))

    def lines(self, action: str) -> list[str]:
        return [line for line in self.out.splitlines() if line.startswith(f"{action} ")]


@dataclass
class Wire:
    """GetObject requests as botocore sent them: (key, Range header, bytes in the response)."""

    gets: list[tuple[str, str | None, int]] = field(default_factory=list)
    # key -> offset past which the body stream breaks, as a dropped connection would
    cut_at: dict[str, int] = field(default_factory=dict)

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-send.s3.GetObject", self._sent)
        client.meta.events.register("after-call.s3.GetObject", self._received)

    def _sent(self, request: Any, **_: Any) -> None:
        key = urlsplit(request.url).path.split(f"/{PREFIX}/", 1)[-1]
        rng = request.headers.get("Range")
        self.gets.append((key, rng.decode() if isinstance(rng, bytes) else rng, -1))

    def _received(self, parsed: Any, **_: Any) -> None:
        key, rng, _size = self.gets[-1]
        self.gets[-1] = (key, rng, parsed.get("ContentLength", -1))
        if key in self.cut_at and "Body" in parsed:
            start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
            parsed["Body"] = CutStream(parsed["Body"], max(0, self.cut_at[key] - start))

    def ranges(self, key: str) -> list[str | None]:
        return [rng for k, rng, _ in self.gets if k == key]


class CutStream:
    def __init__(self, body: Any, allowed: int) -> None:
        self.body, self.allowed = body, allowed

    def read(self, amt: int) -> bytes:
        if not self.allowed:
            raise ResponseStreamingError(error="connection reset by peer (test)")
        chunk: bytes = self.body.read(min(amt, self.allowed))
        self.allowed -= len(chunk)
        return chunk

    def close(self) -> None:
        self.body.close()


@dataclass
class Registry:
    s3: Any
    bucket: str
    runner: Callable[[list[str], str], Result]
    wire: Wire | None = None

    def publish(self, files: dict[str, bytes] = FILES, manifest: Any = None) -> bytes:
        for path, data in files.items():
            self.s3.put_object(Bucket=self.bucket, Key=f"{PREFIX}/{path}", Body=data)
        raw = json.dumps(manifest_for(files) if manifest is None else manifest).encode()
        self.s3.put_object(Bucket=self.bucket, Key=f"{PREFIX}/manifest.json", Body=raw)
        return raw

    def run(self, dest: Path, stdin: str | None = None, prefix: str = PREFIX) -> Result:
        args = ["--bucket", self.bucket, "--prefix", prefix, "--dest", str(dest), "--region", "us-east-1"]
        return self.runner(args, json.dumps(CREDS) if stdin is None else stdin)


def client(endpoint_url: str | None = None) -> Any:
    return boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url=endpoint_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
    )


def host_env(home: Path) -> dict[str, str]:
    """A host's root shell: no AWS config to fall back on, nothing proxied."""
    return isolated_aws_env(home)


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with start_moto_server(tmp_path_factory.mktemp("moto-home")) as url:
        yield url


def in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Registry:
    wire = Wire()
    real_client = s3_sync.client

    def watched_client(*args: Any) -> Any:
        made = real_client(*args)
        wire.attach(made)
        return made

    monkeypatch.setattr(s3_sync, "client", watched_client)

    def run(args: list[str], stdin: str) -> Result:
        wire.gets.clear()
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = s3_sync.main(args)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    s3 = client()
    s3.create_bucket(Bucket="registry")
    return Registry(s3, "registry", run, wire)


def over_http(url: str, home: Path) -> Registry:
    def run(args: list[str], stdin: str) -> Result:
        # Exactly how the program ships it: the source as `-c`, nothing of this repo importable.
        proc = subprocess.run(
            inline.argv(sys.executable, SOURCE, "s3_sync.py", [*args, "--endpoint-url", url]),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            env=host_env(home),
            cwd=home,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    bucket = f"registry-{uuid.uuid4().hex[:12]}"
    s3 = client(url)
    s3.create_bucket(Bucket=bucket)
    return Registry(s3, bucket, run)


@pytest.fixture
def inproc(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Registry]:
    with mock_aws():
        yield in_process(monkeypatch, capsys)


@pytest.fixture(params=["in-process", "moto_server"])
def registry(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Registry]:
    if request.param == "in-process":
        with mock_aws():
            yield in_process(monkeypatch, capsys)
    else:
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        home = tmp_path / "home"
        home.mkdir()
        yield over_http(request.getfixturevalue("moto_server"), home)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "hub" / "models--org--tiny" / "snapshots" / "0123abcd"


def assert_complete(dest: Path, manifest_raw: bytes) -> None:
    """DEST holds exactly the model and the marker; nothing else is left anywhere under the cache."""
    assert tree(dest) == {**FILES, s3_sync.MARKER: sha(manifest_raw).encode() + b"\n"}
    assert not (dest.parent / s3_sync.PARTIAL_DIR).exists()


def test_fresh_sync_lands_every_file_byte_identical(registry: Registry, dest: Path) -> None:
    manifest_raw = registry.publish()
    result = registry.run(dest)
    assert result.code == 0, result.err
    assert_complete(dest, manifest_raw)
    assert sorted(result.lines("fetched")) == sorted(f"fetched {p} ({len(d)} bytes)" for p, d in FILES.items())
    assert result.bytes_downloaded == sum(map(len, FILES.values()))
    if registry.wire:
        assert all(rng is None for _, rng, _ in registry.wire.gets)


def test_second_sync_downloads_nothing_and_changes_nothing(registry: Registry, dest: Path) -> None:
    manifest_raw = registry.publish()
    assert registry.run(dest).code == 0
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.rglob("*")}
    again = registry.run(dest)
    assert again.code == 0, again.err
    assert again.bytes_downloaded == 0
    assert sorted(again.lines("ok")) == sorted(f"ok {p}" for p in FILES)
    assert again.lines("fetched") == again.lines("resumed") == []
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.rglob("*")} == before
    assert_complete(dest, manifest_raw)
    if registry.wire:
        assert registry.wire.gets == [("manifest.json", None, len(manifest_raw))]


def test_matching_marker_skips_rehashing(inproc: Registry, dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inproc.publish()
    assert inproc.run(dest).code == 0

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(s3_sync, "sha256_of", no_hashing)
    assert inproc.run(dest).bytes_downloaded == 0


def test_resume_fetches_only_the_missing_bytes(registry: Registry, dest: Path) -> None:
    """The partial file an interrupted run leaves: the object's first N bytes, outside DEST."""
    manifest_raw = registry.publish()
    kept = 1024 * 1024 + 777
    part = partial_path(dest, BIG)
    part.parent.mkdir(parents=True)
    part.write_bytes(BIG_BYTES[:kept])
    result = registry.run(dest)
    assert result.code == 0, result.err
    rest = len(BIG_BYTES) - kept
    assert result.lines("resumed") == [f"resumed {BIG} at byte {kept} ({rest} bytes)"]
    assert result.bytes_downloaded == sum(map(len, FILES.values())) - kept
    assert_complete(dest, manifest_raw)
    if registry.wire:
        assert registry.wire.ranges(BIG) == [f"bytes={kept}-"]
        assert (BIG, f"bytes={kept}-", rest) in registry.wire.gets


def test_interrupted_download_resumes_where_it_stopped(inproc: Registry, dest: Path) -> None:
    assert inproc.wire
    manifest_raw = inproc.publish()
    cut = 1024 * 1024 + 777
    inproc.wire.cut_at[BIG] = cut
    broken = inproc.run(dest)
    assert broken.code == 1
    assert "connection reset by peer" in broken.err and "Traceback" not in broken.err
    # Each in-run retry resumed from the partial instead of starting over.
    assert inproc.wire.ranges(BIG) == [None, f"bytes={cut}-", f"bytes={cut}-"]
    assert partial_path(dest, BIG).read_bytes() == BIG_BYTES[:cut]
    assert not (dest / BIG).exists() and not (dest / s3_sync.MARKER).exists()
    landed = set(tree(dest))
    assert landed == {"config.json", "tokenizer.json"}

    inproc.wire.cut_at.clear()
    result = inproc.run(dest)
    assert result.code == 0, result.err
    assert inproc.wire.ranges(BIG) == [f"bytes={cut}-"]
    assert (BIG, f"bytes={cut}-", len(BIG_BYTES) - cut) in inproc.wire.gets
    assert sorted(result.lines("ok")) == [f"ok {p}" for p in sorted(landed)]
    assert result.bytes_downloaded == sum(len(d) for p, d in FILES.items() if p not in landed) - cut
    assert_complete(dest, manifest_raw)


def test_damaged_partial_is_fetched_again_whole(registry: Registry, dest: Path) -> None:
    manifest_raw = registry.publish()
    kept = 4096
    part = partial_path(dest, BIG)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * kept)
    result = registry.run(dest)
    assert result.code == 0, result.err
    assert "failed verification" in result.err
    assert f"fetched {BIG} ({len(BIG_BYTES) - kept + len(BIG_BYTES)} bytes)" in result.lines("fetched")
    assert_complete(dest, manifest_raw)


@pytest.mark.parametrize("damage", ["wrong sha256 in manifest", "object corrupted", "object longer"])
def test_checksum_mismatch_leaves_no_file_in_dest(registry: Registry, dest: Path, damage: str) -> None:
    manifest = manifest_for(FILES)
    objects = dict(FILES)
    entry = next(f for f in manifest["files"] if f["path"] == BIG)
    if damage == "wrong sha256 in manifest":
        entry["sha256"] = sha(b"something else")
    elif damage == "object corrupted":
        objects[BIG] = BIG_BYTES[:1000] + bytes([BIG_BYTES[1000] ^ 0xFF]) + BIG_BYTES[1001:]
    else:
        objects[BIG] = BIG_BYTES + b"trailing"
    registry.publish(objects, manifest)
    # A stale copy already in DEST must not survive the failed replacement either.
    dest.mkdir(parents=True)
    (dest / BIG).write_bytes(bytes(len(BIG_BYTES)))
    result = registry.run(dest)
    assert result.code == 2
    assert f"checksum mismatch for {BIG}: expected sha256 {entry['sha256']}" in result.err
    if damage != "object longer":  # that one is cut off one byte past the expected size
        assert f"got sha256 {sha(objects[BIG])}" in result.err
    assert "Traceback" not in result.err
    assert not (dest / BIG).exists() and not (dest / s3_sync.MARKER).exists()
    assert not partial_path(dest, BIG).exists()
    assert set(tree(dest)) < set(FILES)


def test_wrong_files_in_dest_are_replaced(registry: Registry, dest: Path) -> None:
    manifest_raw = registry.publish()
    assert registry.run(dest).code == 0
    # Same size, different bytes, and no marker: only hashing can tell, and it does.
    (dest / s3_sync.MARKER).unlink()
    (dest / "config.json").write_bytes(b"X" * len(FILES["config.json"]))
    result = registry.run(dest)
    assert result.code == 0, result.err
    assert result.lines("fetched") == [f"fetched config.json ({len(FILES['config.json'])} bytes)"]
    assert_complete(dest, manifest_raw)
    # A marker vouches for the rest, but not for a file whose size changed.
    (dest / BIG).write_bytes(BIG_BYTES[:100])
    result = registry.run(dest)
    assert result.code == 0, result.err
    assert result.bytes_downloaded == len(BIG_BYTES)
    assert_complete(dest, manifest_raw)


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/escape.txt", "a/../../escape.txt", "./x", "a//b", "..\\x"])
def test_path_traversal_in_manifest_is_refused(registry: Registry, dest: Path, tmp_path: Path, path: str) -> None:
    registry.publish({}, {"files": [{"path": path, "size": 3, "sha256": sha(b"pwn")}]})
    before = tree(tmp_path)
    result = registry.run(dest)
    assert result.code == 2
    assert f"refusing path {path!r}" in result.err and "Traceback" not in result.err
    assert tree(tmp_path) == before
    assert not (dest / s3_sync.MARKER).exists()


def test_missing_manifest_is_a_clear_error(registry: Registry, dest: Path) -> None:
    result = registry.run(dest, prefix="models/nobody/here")
    assert result.code == 1
    assert f"cannot read s3://{registry.bucket}/models/nobody/here/manifest.json: NoSuchKey" in result.err
    assert "Traceback" not in result.err and result.out == ""


def test_usage_and_credentials_errors_exit_2(registry: Registry, dest: Path) -> None:
    registry.publish()
    secret = CREDS["aws_secret_access_key"]
    for stdin in [f"not json {secret}", json.dumps({"aws_secret_access_key": secret}), json.dumps([secret])]:
        result = registry.run(dest, stdin=stdin)
        assert result.code == 2 and "credentials on stdin" in result.err
        assert secret not in result.out + result.err
    assert registry.runner(["--bucket", registry.bucket], "").code == 2
    assert not dest.exists()


def test_secrets_never_appear_in_output(moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    registry = over_http(moto_server, tmp_path)
    manifest = manifest_for(FILES)
    manifest["files"][0]["sha256"] = sha(b"wrong")
    registry.publish(FILES, manifest)
    dest = tmp_path / "snapshots" / "rev"
    results = [
        registry.run(dest),  # checksum failure
        registry.run(dest, prefix="missing"),  # S3 error
        registry.run(dest, stdin=json.dumps({**CREDS, "extra": "x"})),  # refused credentials
        registry.run(dest, stdin=json.dumps(CREDS)[:-3]),  # truncated JSON
    ]
    registry.publish()
    results.append(registry.run(dest))  # success
    assert [r.code for r in results] == [2, 1, 2, 2, 0]
    for result in results:
        for value in CREDS.values():
            for text in (result.out, result.err):
                assert value not in text and value[:12] not in text


def test_concurrent_syncs_share_one_download(moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers on one host syncing the same snapshot: the second waits on the lock, then finds the marker."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    registry = over_http(moto_server, tmp_path)
    manifest_raw = registry.publish()
    dest = tmp_path / "snapshots" / "rev"
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: registry.run(dest), range(2)))
    assert [r.code for r in results] == [0, 0], [r.err for r in results]
    assert sum(r.bytes_downloaded for r in results) == sum(map(len, FILES.values()))
    assert_complete(dest, manifest_raw)


def test_source_is_self_contained() -> None:
    """The host runs this file alone with a venv that has boto3 and nothing else."""
    imported = set()
    for node in ast.walk(ast.parse(SOURCE)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names) | {"boto3", "botocore"}
