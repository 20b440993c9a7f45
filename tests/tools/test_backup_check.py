"""`make backup-check` against moto: in-process (`mock_aws`, calling `check`, `successful_backups`
and `main`) and as an operator runs it, `python -m tools.backup_check` as a subprocess
talking to a real `moto_server` on 127.0.0.1.

The bucket holds what Weaviate's backup-s3 module writes (docs/data-services-facts.md, B.3):
`<BACKUP_S3_PATH>/<backup id>/backup_config.json`, a descriptor with `id`, `status`, `startedAt`,
`completedAt` (Go's RFC 3339 with up to nine fractional digits, in UTC), next to each node's
`<id>/<node>/backup.json` and data chunks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
import yaml
from botocore.config import Config  # type: ignore[import-untyped]
from moto import mock_aws

from tests.support.moto import isolated_aws_env
from tests.support.moto import moto_server as start_moto_server
from tools import backup_check
from tools.backup_check import Backup, check, parse_time, successful_backups
from tools.synth import ROOT

REGION = "eu-west-1"
PREFIX = "weaviate/prod"
MAX_AGE = timedelta(hours=26)
NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
RUN_TIMEOUT = 60
CREDS = {"AWS_ACCESS_KEY_ID": "AKIABACKUPCHECKTEST1", "AWS_SECRET_ACCESS_KEY": "backup/check+test=secret0123456789"}
GO_ZERO_TIME = "0001-01-01T00:00:00Z"  # what an unfinished backup's `completedAt` holds


def go_time(moment: datetime, nanos: int = 789) -> str:
    """`time.Time` as Go's JSON encoder writes it (RFC 3339, nanoseconds, trailing zeros cut)."""
    utc = moment.astimezone(UTC)
    fraction = f"{utc.microsecond:06d}{nanos:03d}".rstrip("0")
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def descriptor(backup_id: str, status: str, completed: datetime | None) -> dict[str, Any]:
    started = (completed or NOW) - timedelta(minutes=7)
    return {
        "startedAt": go_time(started),
        "completedAt": go_time(completed) if completed is not None else GO_ZERO_TIME,
        "id": backup_id,
        "nodes": {"node1": {"classes": ["Article"], "status": status}},
        "version": "2.1",
        "serverVersion": "1.39.15",
        "status": status,
        "error": "" if status != "FAILED" else "node1: context deadline exceeded",
    }


def s3_client(endpoint_url: str | None = None) -> Any:
    return boto3.client(
        "s3",
        region_name=REGION,
        endpoint_url=endpoint_url,
        aws_access_key_id=CREDS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDS["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
    )


@dataclass
class Bucket:
    s3: Any
    name: str
    prefix: str = PREFIX

    def backup(self, backup_id: str, status: str, completed: datetime | None, prefix: str | None = None) -> None:
        """One backup as Weaviate leaves it: the coordinator's descriptor plus a node's files."""
        base = f"{prefix if prefix is not None else self.prefix}/{backup_id}".lstrip("/")
        self.s3.put_object(
            Bucket=self.name,
            Key=f"{base}/backup_config.json",
            Body=json.dumps(descriptor(backup_id, status, completed)).encode(),
        )
        self.s3.put_object(Bucket=self.name, Key=f"{base}/node1/backup.json", Body=b'{"status": "SUCCESS"}')
        self.s3.put_object(Bucket=self.name, Key=f"{base}/node1/chunk-1", Body=b"\x00" * 64)

    def stack_file(self, directory: Path, max_age_hours: int = 26) -> Path:
        path = directory / f"Pulumi.{self.name}.yaml"
        backup = {"enabled": True, "bucket": self.name, "path": self.prefix, "region": REGION}
        backup["maxAgeHours"] = max_age_hours
        path.write_text(yaml.safe_dump({"config": {"inference-stack:weaviate": {"enabled": True, "backup": backup}}}))
        return path


def new_bucket(s3: Any, name: str | None = None) -> Bucket:
    bucket = Bucket(s3, name or f"backups-{uuid.uuid4().hex[:12]}")
    s3.create_bucket(Bucket=bucket.name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return bucket


@dataclass
class Result:
    code: int
    out: str
    err: str


Runner = Callable[[list[str]], Result]


def clean_env(home: Path) -> dict[str, str]:
    """An operator's shell with only the fake credentials: no AWS config to fall back on, nothing proxied."""
    return isolated_aws_env(home, **CREDS)


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with start_moto_server(tmp_path_factory.mktemp("moto-home")) as url:
        yield url


@dataclass
class Backend:
    bucket: Bucket
    run: Runner


@pytest.fixture(params=["in-process", "moto_server"])
def backend(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Backend]:
    if request.param == "in-process":
        for key in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            monkeypatch.setenv(key, os.devnull)
        for key, value in CREDS.items():
            monkeypatch.setenv(key, value)
        with mock_aws():

            def run_main(args: list[str]) -> Result:
                code = backup_check.main(args)
                out, err = capsys.readouterr()
                return Result(code, out, err)

            yield Backend(new_bucket(s3_client()), run_main)
    else:
        url = request.getfixturevalue("moto_server")
        home = tmp_path / "home"
        home.mkdir()

        def run_module(args: list[str]) -> Result:
            proc = subprocess.run(
                [sys.executable, "-m", "tools.backup_check", *args, "--endpoint-url", url],
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                env=clean_env(home),
                cwd=ROOT,
            )
            return Result(proc.returncode, proc.stdout, proc.stderr)

        yield Backend(new_bucket(s3_client(url)), run_module)


def run_check(backend: Backend, tmp_path: Path) -> Result:
    return backend.run(["--stack-file", str(backend.bucket.stack_file(tmp_path))])


# --- end to end, on both backends ----------------------------------------------------------------------


def test_a_recent_successful_backup_passes(backend: Backend, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    backend.bucket.backup("nightly-1", "SUCCESS", now - timedelta(hours=25))
    backend.bucket.backup("nightly-2", "SUCCESS", now - timedelta(hours=2))
    result = run_check(backend, tmp_path)
    assert result.code == 0, result
    assert result.out.startswith("backup-check: ok: newest backup `nightly-2`")
    assert f"s3://{backend.bucket.name}/{PREFIX}" in result.out and "2.0 h ago" in result.out
    assert CREDS["AWS_SECRET_ACCESS_KEY"] not in result.out + result.err


def test_only_old_backups_fail_naming_the_age_and_limit(backend: Backend, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    backend.bucket.backup("nightly-1", "SUCCESS", now - timedelta(hours=50))
    backend.bucket.backup("nightly-2", "SUCCESS", now - timedelta(hours=30))
    result = run_check(backend, tmp_path)
    assert result.code == 1, result
    assert "FAIL" in result.out and "`nightly-2`" in result.out
    assert "30.0 h ago" in result.out and "over the 26 h limit (weaviate.backup.maxAgeHours)" in result.out


def test_no_backup_at_all_fails(backend: Backend, tmp_path: Path) -> None:
    result = run_check(backend, tmp_path)
    assert result.code == 1, result
    assert f"no successful Weaviate backup under s3://{backend.bucket.name}/{PREFIX}" in result.out


def test_a_newer_started_or_failed_backup_does_not_count(backend: Backend, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    backend.bucket.backup("nightly-1", "SUCCESS", now - timedelta(hours=30))
    backend.bucket.backup("nightly-2", "FAILED", now - timedelta(hours=1))
    backend.bucket.backup("nightly-3", "STARTED", None)
    backend.bucket.backup("nightly-4", "TRANSFERRING", None)
    # A recent success outside the configured path (another stack's) is not this stack's backup.
    backend.bucket.backup("other-stack", "SUCCESS", now - timedelta(hours=1), prefix=PREFIX + "-staging")
    result = run_check(backend, tmp_path)
    assert result.code == 1, result
    assert "`nightly-1`" in result.out and "30.0 h ago" in result.out


def test_the_limit_comes_from_the_stack(backend: Backend, tmp_path: Path) -> None:
    backend.bucket.backup("nightly-1", "SUCCESS", datetime.now(UTC) - timedelta(hours=30))
    result = backend.run(["--stack-file", str(backend.bucket.stack_file(tmp_path, max_age_hours=48))])
    assert result.code == 0, result


def test_a_stack_without_backups_is_a_config_error(backend: Backend, tmp_path: Path) -> None:
    stack = tmp_path / "Pulumi.nobackup.yaml"
    stack.write_text(yaml.safe_dump({"config": {"inference-stack:weaviate": {"enabled": True}}}))
    result = backend.run(["--stack-file", str(stack)])
    assert result.code == 2, result
    assert "weaviate.backup is not enabled with a bucket" in result.err
    missing = backend.run(["--stack-file", str(tmp_path / "Pulumi.missing.yaml")])
    assert missing.code == 2 and "backup-check:" in missing.err


# --- in-process detail -------------------------------------------------------------------------------


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
    for key, value in CREDS.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield new_bucket(s3_client())


def test_nanosecond_timestamps_parse() -> None:
    assert parse_time("2026-11-26T03:00:01.123456789Z") == datetime(2026, 11, 26, 3, 0, 1, 123456, tzinfo=UTC)
    assert parse_time("2026-11-26T03:00:01.1Z") == datetime(2026, 11, 26, 3, 0, 1, 100000, tzinfo=UTC)
    assert parse_time("2026-11-26T03:00:01Z") == datetime(2026, 11, 26, 3, 0, 1, tzinfo=UTC)
    # Weaviate writes UTC (`time.Now().UTC()`), but RFC 3339 allows an offset: it must not be lost.
    assert parse_time("2026-11-26T05:00:01.123456789+02:00") == datetime(2026, 11, 26, 3, 0, 1, 123456, tzinfo=UTC)
    assert parse_time("2026-11-25T22:00:01.5-05:00") == datetime(2026, 11, 26, 3, 0, 1, 500000, tzinfo=UTC)


def test_successful_backups_reads_descriptors_in_order(bucket: Bucket) -> None:
    completed = datetime(2026, 11, 26, 3, 0, 1, 123456, tzinfo=UTC)
    bucket.backup("b-old", "SUCCESS", completed - timedelta(days=1))
    bucket.backup("b-new", "SUCCESS", completed)
    bucket.backup("b-failed", "FAILED", completed + timedelta(hours=1))
    bucket.backup("b-running", "STARTED", None)
    raw = bucket.s3.get_object(Bucket=bucket.name, Key=f"{PREFIX}/b-new/backup_config.json")["Body"].read()
    assert json.loads(raw)["completedAt"] == "2026-11-26T03:00:01.123456789Z"
    # The prefix is found with or without slashes around it.
    for prefix in (PREFIX, f"/{PREFIX}/", f"{PREFIX}/"):
        assert successful_backups(bucket.s3, bucket.name, prefix) == [
            Backup("b-old", completed - timedelta(days=1)),
            Backup("b-new", completed),
        ]


def test_check_measures_age_against_now(bucket: Bucket) -> None:
    bucket.backup("b1", "SUCCESS", NOW - timedelta(hours=25, minutes=54))
    ok, message = check(bucket.s3, bucket.name, PREFIX, MAX_AGE, NOW)
    assert ok and message == f"newest backup `b1` under s3://{bucket.name}/{PREFIX} completed 25.9 h ago"
    ok, message = check(bucket.s3, bucket.name, PREFIX, MAX_AGE, NOW + timedelta(minutes=10))
    assert not ok and "26.1 h ago, over the 26 h limit" in message
    ok, message = check(bucket.s3, bucket.name, "weaviate/elsewhere", MAX_AGE, NOW)
    assert not ok and message == f"no successful Weaviate backup under s3://{bucket.name}/weaviate/elsewhere"


def test_backups_at_the_bucket_root(bucket: Bucket) -> None:
    bucket.backup("root-1", "SUCCESS", NOW - timedelta(hours=1), prefix="")
    bucket.backup("nested", "SUCCESS", NOW, prefix="weaviate/prod")
    (ok, message) = check(bucket.s3, bucket.name, "", MAX_AGE, NOW)
    # With an empty path every descriptor in the bucket is a candidate; the newest wins.
    assert ok and "`nested`" in message


def test_the_shipped_prod_stack_file(bucket: Bucket, capsys: pytest.CaptureFixture[str]) -> None:
    prod = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]["inference-stack:weaviate"]["backup"]
    shipped = Bucket(bucket.s3, prod["bucket"], prod["path"])
    bucket.s3.create_bucket(Bucket=shipped.name, CreateBucketConfiguration={"LocationConstraint": prod["region"]})
    shipped.backup("prod-nightly", "SUCCESS", datetime.now(UTC) - timedelta(hours=3))
    assert backup_check.main(["--stack-file", str(ROOT / "Pulumi.prod.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"newest backup `prod-nightly` under s3://{prod['bucket']}/{prod['path']}" in out
