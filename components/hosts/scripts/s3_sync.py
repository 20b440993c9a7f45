"""Model-registry sync, run on a GPU host: s3://BUCKET/PREFIX/ -> DEST, the snapshot dir vLLM reads.

Shipped as `python3 -c <this source> s3_sync.py ARGS` (components/inline.py), so it is one file
with only the stdlib and boto3.
Credentials arrive as JSON on stdin (empty stdin: boto3's default chain) and are never printed.

Safety rules, in order of importance:
- Nothing lands in DEST before its size and sha256 match the manifest; downloads go to
  DEST/../.inference-stack-partial/<DEST name>/<path>.<sha256[:16]>.part, next to DEST so that
  `os.replace` into it is atomic (same filesystem), and outside it so vLLM never sees them.
- The marker DEST/.inference-stack-complete holds the sha256 of the manifest it was verified
  against. It is removed before DEST changes and written last, so it only ever vouches for a
  complete, verified DEST. With a matching marker a file whose size matches is trusted without
  re-hashing: only this script writes DEST, each file verified, so the remaining risk is someone
  editing a file in place at the same size, which a marker cannot catch without re-reading every byte.
- An interrupted download keeps its partial file and the next run resumes it with a Range request;
  the sha256 of the whole file is checked afterwards, so a stale or damaged prefix is caught.

Output: `ok PATH`, `fetched PATH (N bytes)`, `resumed PATH at byte K (N bytes)`, then
`summary: files=F ok=O downloaded=D bytes_downloaded=B`. Errors go to stderr as `s3_sync: error: ...`.
Exit codes: 0 done; 2 the input is wrong (usage, credentials JSON, manifest, checksum): retrying
will not help; 1 anything else (S3 or filesystem errors): partial files are kept for the next run;
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

MARKER = ".inference-stack-complete"
PARTIAL_DIR = ".inference-stack-partial"
CHUNK = 1024 * 1024
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
# Attempts per file when the body stream breaks mid-way; each one resumes where the last stopped.
ATTEMPTS = 3
CREDENTIAL_KEYS = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token"}


class SyncError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    sha256: str


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="s3_sync", description="Sync a model from an S3 registry into DEST.")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True, help="the model's key prefix; manifest.json lives under it")
    parser.add_argument("--dest", required=True, type=Path, help="the snapshot directory vLLM reads")
    parser.add_argument("--endpoint-url", help="an S3-compatible endpoint (path-style addressing)")
    parser.add_argument("--region")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        return sync(client(_read_credentials(), args.endpoint_url, args.region), args)
    except SyncError as error:
        print(f"s3_sync: error: {error}", file=sys.stderr)
        return error.code
    except (BotoCoreError, OSError) as error:
        print(f"s3_sync: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("s3_sync: interrupted; partial downloads are kept and resume on the next run", file=sys.stderr)
        return 130


def _read_credentials() -> dict[str, str]:
    text = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    if not text.strip():
        return {}
    # Neither the text nor the parser's message (which can quote it) goes into the error.
    try:
        creds = json.loads(text)
    except ValueError:
        raise SyncError("credentials on stdin are not valid JSON", 2) from None
    if (
        not isinstance(creds, dict)
        or not set(creds) <= CREDENTIAL_KEYS
        or not all(isinstance(v, str) for v in creds.values())
        or not {"aws_access_key_id", "aws_secret_access_key"} <= set(creds)
    ):
        raise SyncError(f"credentials on stdin must be a JSON object of strings with keys {sorted(CREDENTIAL_KEYS)}", 2)
    return creds


def client(creds: dict[str, str], endpoint_url: str | None, region: str | None) -> Any:
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    session = boto3.session.Session(region_name=region, **creds)
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def sync(s3: Any, args: argparse.Namespace) -> int:
    bucket, prefix = args.bucket, args.prefix.strip("/")
    base = f"{prefix}/" if prefix else ""
    dest: Path = args.dest.resolve()
    if dest.parent == dest:
        raise SyncError(f"--dest {dest} has no parent directory to keep partial downloads in", 2)
    try:
        manifest_raw = s3.get_object(Bucket=bucket, Key=f"{base}manifest.json")["Body"].read(MAX_MANIFEST_BYTES + 1)
    except ClientError as error:
        raise _s3_error(error, bucket, f"{base}manifest.json") from None
    manifest_sha = hashlib.sha256(manifest_raw).hexdigest()
    entries = _parse_manifest(manifest_raw)
    partial = dest.parent / PARTIAL_DIR / dest.name

    dest.mkdir(parents=True, exist_ok=True)
    # Two workers on one host can share a model cache: the second waits, then finds the marker.
    lock = os.open(dest, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        trusted = _read_marker(dest) == manifest_sha
        todo = [e for e in entries if not _in_place(dest / e.path, e, trusted)]
        if todo or not trusted:
            (dest / MARKER).unlink(missing_ok=True)
        downloaded = 0
        for entry in todo:
            target = dest / entry.path
            if not target.parent.resolve().is_relative_to(dest):
                raise SyncError(f"{entry.path}: a symlinked directory in {dest} leads outside it", 2)
            target.unlink(missing_ok=True)  # wrong or incomplete: vLLM must not read it while we fetch
            # The sha in the name keeps a partial of another version of this file from being resumed.
            part = partial / f"{entry.path}.{entry.sha256[:16]}.part"
            downloaded += _download(s3, bucket, base + entry.path, entry, part, target)
        if todo or not trusted:
            _write_marker(dest, partial, manifest_sha)
        shutil.rmtree(partial, ignore_errors=True)
        with contextlib.suppress(OSError):  # not empty: another snapshot's download is pending
            partial.parent.rmdir()
    finally:
        os.close(lock)
    ok = len(entries) - len(todo)
    print(f"summary: files={len(entries)} ok={ok} downloaded={len(todo)} bytes_downloaded={downloaded}", flush=True)
    return 0


def _s3_error(error: Any, bucket: str, key: str) -> SyncError:
    details = error.response.get("Error", {})
    return SyncError(f"cannot read s3://{bucket}/{key}: {details.get('Code', '?')}: {details.get('Message', '')}")


def _parse_manifest(raw: bytes) -> list[Entry]:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise SyncError(f"manifest.json is larger than {MAX_MANIFEST_BYTES} bytes", 2)
    try:
        files = json.loads(raw).get("files")
    except (ValueError, AttributeError):
        files = None
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise SyncError('manifest.json must be {"files": [{"path": ..., "size": ..., "sha256": ...}, ...]}', 2)
    entries: dict[str, Entry] = {}
    for f in files:
        path, size, sha = f.get("path"), f.get("size"), f.get("sha256")
        if (
            not isinstance(path, str)
            or path.startswith("/")
            or any(c in path for c in "\\\0")
            or any(part in ("", ".", "..") for part in path.split("/"))
        ):
            raise SyncError(
                f"manifest.json: refusing path {path!r}: it must stay inside DEST "
                "(relative, '/' separators, no '..', '.' or empty segments)",
                2,
            )
        if path == MARKER or path in entries:
            raise SyncError(f"manifest.json: {path} is listed twice or is a reserved name", 2)
        if type(size) is not int or size < 0 or not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
            raise SyncError(f"manifest.json: {path}: needs a non-negative integer size and a hex sha256", 2)
        entries[path] = Entry(path, size, sha.lower())
    return list(entries.values())


def _in_place(target: Path, entry: Entry, trusted: bool) -> bool:
    """Whether DEST already holds this file; hashes only when no marker vouches for it."""
    if not target.is_file() or target.stat().st_size != entry.size:
        return False
    if not trusted and sha256_of(target) != entry.sha256:
        return False
    print(f"ok {entry.path}", flush=True)
    return True


def _download(s3: Any, bucket: str, key: str, entry: Entry, part: Path, target: Path) -> int:
    part.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.exists() else 0
    fetched = _fill(s3, bucket, key, entry, part)
    actual = _actual(part, entry)
    if actual and start:
        # The kept prefix may be damaged (a crash mid-write): one whole download settles it.
        print(f"s3_sync: {entry.path}: resumed file failed verification; fetching it whole", file=sys.stderr)
        part.unlink()
        start = 0
        fetched += _fill(s3, bucket, key, entry, part)
        actual = _actual(part, entry)
    if actual:
        part.unlink()
        raise SyncError(
            f"checksum mismatch for {entry.path}: expected sha256 {entry.sha256} ({entry.size} bytes), "
            f"got {actual}; the download was discarded",
            2,
        )
    fd = os.open(part, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename must not reach the disk before the data does
    finally:
        os.close(fd)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, target)
    _fsync_dir(target.parent)
    if start:
        print(f"resumed {entry.path} at byte {start} ({fetched} bytes)", flush=True)
    else:
        print(f"fetched {entry.path} ({fetched} bytes)", flush=True)
    return fetched


def _fill(s3: Any, bucket: str, key: str, entry: Entry, part: Path) -> int:
    """Appends to the partial file until it holds the whole object; returns the bytes fetched."""
    start = part.stat().st_size if part.exists() else 0
    for attempt in range(1, ATTEMPTS + 1):
        have = part.stat().st_size if part.exists() else 0
        try:
            _fetch(s3, bucket, key, entry, part, have)
            break
        except BotoCoreError as error:
            if attempt == ATTEMPTS:
                raise
            print(f"s3_sync: {entry.path}: {error}; resuming", file=sys.stderr, flush=True)
    return (part.stat().st_size if part.exists() else 0) - start


def _fetch(s3: Any, bucket: str, key: str, entry: Entry, part: Path, have: int) -> None:
    if have and have >= entry.size:
        return  # complete, or too long: verification decides
    try:
        body = s3.get_object(Bucket=bucket, Key=key, **({"Range": f"bytes={have}-"} if have else {}))["Body"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "InvalidRange":
            return  # the object is shorter than the partial: verification fails and refetches
        raise _s3_error(error, bucket, key) from None
    with open(part, "ab") as out:
        # One byte past the expected size is enough to prove the object is too long.
        while have <= entry.size and (chunk := body.read(min(CHUNK, entry.size + 1 - have))):
            out.write(chunk)
            have += len(chunk)
    body.close()


def _actual(part: Path, entry: Entry) -> str:
    """'' when the partial file matches the manifest, else what it holds instead."""
    size, sha = part.stat().st_size, sha256_of(part)
    return "" if (size, sha) == (entry.size, entry.sha256) else f"sha256 {sha} ({size} bytes)"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_marker(dest: Path) -> str:
    try:
        return (dest / MARKER).read_text().strip()
    except OSError:
        return ""


def _write_marker(dest: Path, partial: Path, manifest_sha: str) -> None:
    partial.mkdir(parents=True, exist_ok=True)
    tmp = partial / f"{MARKER}.tmp"
    with open(tmp, "w") as f:
        f.write(manifest_sha + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dest / MARKER)
    _fsync_dir(dest)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


if __name__ == "__main__":
    # Under `-c`, the word after the source is this script's name, as it is $0 for a shell.
    sys.exit(main(sys.argv[2:] if sys.argv[0] == "-c" else sys.argv[1:]))
