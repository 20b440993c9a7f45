"""Secrets in a stack file: never echoed in an error, accepted where `pulumi config set --secret
--path` puts them, and checked up front when their plaintext is there (a real `pulumi up`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.errors import ConfigError
from stacks.stackfile import read
from stacks.validation import split_config, validate
from tests.helpers import assert_refused_at, valid_config, validate_values
from tools.synth import SECRET, synth_stack

PLAIN = "hf_plaintextThatMustNeverBeShown1234"
FAKE_KEY_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZWQyNTUxOQ\n" * 3
SSH_KEY = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{FAKE_KEY_BODY}-----END OPENSSH PRIVATE KEY-----\n"
Mutation = Callable[[dict[str, Any]], None]


# (id, mutation, secret keys, expected key path, fragment of the rule, text that must not appear)
CASES: list[tuple[str, Mutation, set[str], str, str, str]] = [
    ("mistyped-secret-key", lambda c: c.update(hfTokn=PLAIN), set(), "inference-stack:hfTokn", "unknown key", PLAIN),
    (
        "mistyped-secret-key-set-secret",
        lambda c: c.update(vllmApiKye=PLAIN),
        {"vllmApiKye"},
        "inference-stack:vllmApiKye",
        "unknown key",
        PLAIN,
    ),
    (
        "secret-nested-under-gateway",
        lambda c: c.update(gateway={"apiKey": PLAIN}),
        set(),
        "inference-stack:gateway.apiKey",
        "unknown key",
        PLAIN,
    ),
    (
        "secret-nested-under-redis",
        lambda c: c.update(redis={"enabled": True, "password": PLAIN}),
        set(),
        "inference-stack:redis.password",
        "unknown key",
        PLAIN,
    ),
    (
        "secret-nested-in-backup",
        lambda c: c.update(weaviate={"backup": {"secretAccessKey": PLAIN}}),
        set(),
        "inference-stack:weaviate.backup.secretAccessKey",
        "unknown key",
        PLAIN,
    ),
    (
        "secret-nested-in-host-ssh",
        lambda c: c["hosts"][0].update(ssh={"user": "ops", "address": "10.0.0.5", "privateKey": PLAIN}),
        set(),
        "inference-stack:hosts[0].ssh.privateKey",
        "unknown key",
        PLAIN,
    ),
    (
        "secret-in-non-secret-key",
        lambda c: c.update(weaviate={"backup": {"bucket": PLAIN}}),
        {"weaviate"},
        "inference-stack:weaviate",
        "it is not a credential",
        PLAIN,
    ),
    (
        "secret-string-set-with-path",
        lambda c: c.update(hfToken={"token": PLAIN}),
        {"hfToken"},
        "inference-stack:hfToken",
        "it holds a structure",
        PLAIN,
    ),
    (
        "worker-key-one-character",
        lambda c: c.update(vllmApiKey="x"),
        {"vllmApiKey"},
        "inference-stack:vllmApiKey",
        "must be 16-256 of",
        "= x",
    ),
    (
        "worker-key-with-space",
        lambda c: c.update(vllmApiKey="sk-aaaaaaaa bbbbbbbbbbbb"),
        {"vllmApiKey"},
        "inference-stack:vllmApiKey",
        "quoted `Authorization: Bearer` header",
        "bbbbbbbbbbbb",
    ),
    (
        "worker-key-with-quote",
        lambda c: c.update(vllmApiKey='sk-aaaaaaaaaaaaaaaa"x'),
        {"vllmApiKey"},
        "inference-stack:vllmApiKey",
        "must be 16-256 of",
        "aaaaaaaaaaaaaaaa",
    ),
    (
        "redis-password-short",
        lambda c: c.update(redisPassword="hunter2"),
        {"redisPassword"},
        "inference-stack:redisPassword",
        "the Redis password must be 16-256",
        "hunter2",
    ),
    (
        "redis-password-with-space",
        lambda c: c.update(redisPassword="correct horse battery"),
        {"redisPassword"},
        "inference-stack:redisPassword",
        "without spaces",
        "horse",
    ),
    (
        "grafana-password-short",
        lambda c: c.update(grafanaAdminPassword="admin"),
        {"grafanaAdminPassword"},
        "inference-stack:grafanaAdminPassword",
        "16-256 printable characters",
        'admin"',
    ),
    (
        "hf-token-with-space",
        lambda c: c.update(hfToken="hf_abc def ghi jkl mno"),
        {"hfToken"},
        "inference-stack:hfToken",
        "printable ASCII without spaces",
        "ghi jkl",
    ),
    (
        "s3-secret-with-whitespace",
        lambda c: c.update(s3SecretAccessKey="wJalrXUtnFEMI K7MDENG"),
        {"s3SecretAccessKey"},
        "inference-stack:s3SecretAccessKey",
        "no spaces",
        "K7MDENG",
    ),
    (
        "s3-secret-trailing-newline",
        lambda c: c.update(s3SecretAccessKey="wJalrXUtnFEMIK7MDENG\n"),
        {"s3SecretAccessKey"},
        "inference-stack:s3SecretAccessKey",
        "boto3 signs with it",
        "wJalrXUtnFEMIK7MDENG",
    ),
    (
        "s3-access-key-with-quote",
        lambda c: c.update(s3AccessKeyId="AKIA'EXAMPLE"),
        {"s3AccessKeyId"},
        "inference-stack:s3AccessKeyId",
        "an S3 access key id is",
        "AKIA'EXAMPLE",
    ),
    (
        "backup-secret-with-space",
        lambda c: c.update(weaviateBackupSecretAccessKey="minio secret key"),
        {"weaviateBackupSecretAccessKey"},
        "inference-stack:weaviateBackupSecretAccessKey",
        "backup-s3",
        "minio",
    ),
    (
        "backup-access-key-short",
        lambda c: c.update(weaviateBackupAccessKeyId="ab"),
        {"weaviateBackupAccessKeyId"},
        "inference-stack:weaviateBackupAccessKeyId",
        "8-256",
        '"ab"',
    ),
    (
        "ssh-key-is-a-public-key",
        lambda c: c.update(sshPrivateKey="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOps ops@x"),
        {"sshPrivateKey"},
        "inference-stack:sshPrivateKey",
        "not an SSH private key",
        "AAAAC3Nza",
    ),
    (
        "ssh-key-is-a-path",
        lambda c: c.update(sshPrivateKey="/home/ops/.ssh/deploy"),
        {"sshPrivateKey"},
        "inference-stack:sshPrivateKey",
        "a path is not a private key",
        "/home/ops",
    ),
    (
        "ssh-key-encrypted",
        lambda c: c.update(sshPrivateKey=SSH_KEY.replace("OPENSSH PRIVATE", "ENCRYPTED PRIVATE")),
        {"sshPrivateKey"},
        "inference-stack:sshPrivateKey",
        "passphrase-protected",
        FAKE_KEY_BODY[:30],
    ),
    (
        "client-keys-nested-short",
        lambda c: c.update(gatewayApiKeys={"team-a": "short"}),
        {"gatewayApiKeys"},
        "inference-stack:gatewayApiKeys",
        "must be 16-256 characters",
        "short",
    ),
    (
        "client-keys-a-list",
        lambda c: c.update(gatewayApiKeys=["sk-aaaaaaaaaaaaaaaaaaaa"]),
        {"gatewayApiKeys"},
        "inference-stack:gatewayApiKeys",
        "must be a JSON object",
        "aaaaaaaaaaaa",
    ),
    (
        "client-keys-shared",
        lambda c: c.update(gatewayApiKeys={"a": "sk-" + "k" * 20, "b": "sk-" + "k" * 20}),
        {"gatewayApiKeys"},
        "inference-stack:gatewayApiKeys",
        "two clients share a key",
        "kkkkkkkk",
    ),
    (
        "client-name-reserved",
        lambda c: c.update(gatewayApiKeys={"generated": "sk-" + "g" * 20}),
        {"gatewayApiKeys"},
        "inference-stack:gatewayApiKeys",
        "the client name `generated` is the gateway's own",
        "gggggggg",
    ),
    (
        "weaviate-keys-not-json",
        lambda c: c.update(weaviateApiKeys="app=" + "k" * 20),
        {"weaviateApiKeys"},
        "inference-stack:weaviateApiKeys",
        "must be a JSON object",
        "kkkkkkkk",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "secret", "path", "rule", "hidden"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_secret_problem_is_refused_without_echo(
    mutate: Mutation, secret: set[str], path: str, rule: str, hidden: str
) -> None:
    cfg = valid_config()
    mutate(cfg)
    error = assert_refused_at(cfg, path, rule, secret)
    assert hidden not in str(error)


def test_a_mistyped_secret_key_says_to_set_it_as_a_secret() -> None:
    cfg = valid_config()
    cfg["hfTokn"] = PLAIN
    with pytest.raises(
        ConfigError,
        match=r"did you mean `hfToken`\? `pulumi config rm hfTokn`, then `pulumi config "
        r"set --secret hfToken`",
    ):
        validate_values(cfg, set())


def test_valid_secrets_pass() -> None:
    cfg = valid_config()
    cfg.update(
        hfToken="hf_" + "a" * 34,
        vllmApiKey="Zm9vYmFyYmF6cXV4cXV1eA==",
        redisPassword="correct-horse-battery-staple",
        grafanaAdminPassword="7Yq!pL2#vX9@kR4$",
        s3AccessKeyId="AKIAIOSFODNN7EXAMPLE",
        s3SecretAccessKey="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        sshPrivateKey=SSH_KEY,
        gatewayApiKeys={"team-a": "sk-" + "a" * 20},
        weaviateApiKeys={"app": "w" * 20},
    )
    validate_values(cfg, set(cfg) - {"hosts", "workers"})


NESTED = """
  inference-stack:gatewayApiKeys:
    team-a:
      secure: v1:Y2lwaGVydGV4dC10ZWFtLWE=
    team-b:
      secure: v1:Y2lwaGVydGV4dC10ZWFtLWI=
  inference-stack:weaviateApiKeys:
    app:
      secure: v1:Y2lwaGVydGV4dC1hcHA=
"""


def stack_text(extra: str) -> str:
    cfg = valid_config()
    cfg["weaviate"] = {"enabled": True}
    return yaml.safe_dump({"config": {f"inference-stack:{k}": v for k, v in cfg.items()}}) + extra


def test_nested_secure_values_are_accepted_and_kept_secret(tmp_path: Path) -> None:
    """What `pulumi config set --secret --path 'gatewayApiKeys.team-a'` writes renders, and the
    keys come out as secrets, with no ciphertext anywhere in the render."""
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(stack_text(NESTED))
    stack_file = read(path)
    assert {"inference-stack:gatewayApiKeys", "inference-stack:weaviateApiKeys"} <= set(stack_file.secret_keys)
    validate("test", *split_config(stack_file.config, stack_file.secret_keys))
    synth = synth_stack("test", path)
    rendered = json.dumps(synth.resources) + json.dumps(synth.files())
    assert "v1:" not in rendered and "team-a" not in rendered
    nginx = next(r for r in synth.resources if r["name"].endswith("gateway-nginx"))
    assert SECRET in json.dumps(nginx["inputs"])


def test_a_secure_value_under_a_plain_key_is_refused_without_ciphertext(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(
        stack_text("  inference-stack:redis:\n    enabled: true\n    password:\n      secure: v1:c2VjcmV0\n")
    )
    stack_file = read(path)
    with pytest.raises(ConfigError) as caught:
        validate("test", *split_config(stack_file.config, stack_file.secret_keys))
    text = str(caught.value)
    assert "inference-stack:redis" in text and "it is not a credential" in text
    assert "v1:c2VjcmV0" not in text and "synth-placeholder" not in text


def test_every_secret_has_its_shape_documented() -> None:
    from stacks import secrets
    from stacks.config import SECRET_KEYS

    assert set(secrets.SHAPES) == set(SECRET_KEYS)
    assert set(secrets.RULES) | {"sshPrivateKey", "gatewayApiKeys", "weaviateApiKeys", "kubeconfig"} == set(SECRET_KEYS)
