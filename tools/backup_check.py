"""`make backup-check STACK=<name>`: is the newest Weaviate backup recent enough?

Weaviate's backup-s3 module writes `<path>/<backup id>/backup_config.json` when a backup starts
and rewrites it when it ends, so the file alone proves nothing: only a config whose `status` is
`SUCCESS` counts, dated by its `completedAt`. Exit 0 when the newest successful backup is younger
than `weaviate.backup.maxAgeHours`, 1 when it is older or there is none, 2 on a config error.
Credentials come from the usual AWS chain of whoever runs it (env, profile, instance role).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]

from stacks.config import WeaviateBackup, WeaviateConfig
from stacks.errors import ConfigError
from stacks.stackfile import config_of

CONFIG_NAME = "backup_config.json"


@dataclass(frozen=True)
class Backup:
    id: str
    completed_at: datetime


def parse_time(text: str) -> datetime:
    # Weaviate writes RFC 3339 with nanoseconds; Python takes at most microseconds.
    head, dot, rest = text.replace("Z", "+00:00").partition(".")
    if dot:
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def successful_backups(client: Any, bucket: str, prefix: str) -> list[Backup]:
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if not key.endswith("/" + CONFIG_NAME):
                continue
            doc = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
            if doc.get("status") == "SUCCESS" and doc.get("completedAt"):
                found.append(Backup(doc.get("id") or key.split("/")[-2], parse_time(doc["completedAt"])))
    return sorted(found, key=lambda b: b.completed_at)


def check(client: Any, bucket: str, prefix: str, max_age: timedelta, now: datetime) -> tuple[bool, str]:
    backups = successful_backups(client, bucket, prefix)
    where = f"s3://{bucket}/{prefix.strip('/')}"
    if not backups:
        return False, f"no successful Weaviate backup under {where}"
    newest = backups[-1]
    age = now - newest.completed_at
    hours = age.total_seconds() / 3600
    if age > max_age:
        return False, (
            f"newest backup `{newest.id}` under {where} completed {hours:.1f} h ago, over the "
            f"{max_age.total_seconds() / 3600:g} h limit (weaviate.backup.maxAgeHours)"
        )
    return True, f"newest backup `{newest.id}` under {where} completed {hours:.1f} h ago"


def backup_settings(stack_file: Path) -> WeaviateBackup:
    """The stack's backup settings, through the same schema (and defaults) as the program."""
    weaviate = WeaviateConfig.model_validate(config_of(stack_file).get("inference-stack:weaviate") or {})
    if not weaviate.enabled or not weaviate.backup.enabled or weaviate.backup.bucket is None:
        raise ValueError(f"{stack_file.name}: weaviate.backup is not enabled with a bucket")
    return weaviate.backup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack-file", type=Path, required=True)
    parser.add_argument("--endpoint-url", help="override, e.g. for a local S3-compatible endpoint")
    args = parser.parse_args(argv)
    try:
        backup = backup_settings(args.stack_file)
    except (OSError, ValueError, ConfigError) as err:
        print(f"backup-check: {err}", file=sys.stderr)
        return 2
    assert backup.bucket is not None
    endpoint = args.endpoint_url
    if endpoint is None and backup.endpoint:
        endpoint = ("https://" if backup.use_ssl else "http://") + backup.endpoint
    client = boto3.client("s3", endpoint_url=endpoint, region_name=backup.region)
    ok, message = check(client, backup.bucket, backup.path, timedelta(hours=backup.max_age_hours), datetime.now(UTC))
    print(f"backup-check: {'ok' if ok else 'FAIL'}: {message}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
