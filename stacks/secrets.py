"""What each secret's plaintext must look like, checked up front without ever showing it.

A one-character worker key or an S3 secret with a space in it would otherwise be found deep
inside an apply, as a chained ValueError, after other resources were already created. Each
rule names what receives the value, so the reason is plain without the value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import yaml

# The alphabet of every key that sits in a quoted nginx map, a Weaviate env file or an
# `Authorization: Bearer` header: nothing that can end a quoted string or a header.
TOKEN68 = re.compile(r"[A-Za-z0-9._~+/=-]{16,256}")
# AWS access key ids are 16-128 of [A-Z0-9]; MinIO and other S3-compatible stores allow more
# (3-128 printable); a space or a quote is in neither. Secret keys: 40 characters on AWS,
# at least 8 on MinIO (`MINIO_ROOT_PASSWORD`).
S3_CREDENTIAL = re.compile(r"[A-Za-z0-9/+=._-]{8,256}")
# A header value (RFC 9110 `field-vchar`), as `hf` sends the token: printable ASCII, no space.
HEADER_TOKEN = re.compile(r"[\x21-\x7e]{8,512}")
# Grafana reads the password from a file and compares bytes; a trailing newline or a space
# typed into the shell would silently become part of it.
PASSWORD = re.compile(r"[\x21-\x7e]{16,256}")
_PEM = re.compile(
    r"-----BEGIN (OPENSSH|RSA|EC|DSA) PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n:,-]+?\r?\n"
    r"-----END \1 PRIVATE KEY-----\s*",
)


CLIENT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# The gateway's own clients: the canary gate's probes and the key generated for first requests.
# No `gatewayApiKeys` client may take these names, whether or not the stack uses them: turning
# the generated key on later must not silently take a client's name.
GATE_CLIENT = "canary-gate"
GENERATED_CLIENT = "generated"
RESERVED_CLIENTS = (GATE_CLIENT, GENERATED_CLIENT)


def check_client_keys(client_keys: dict[str, str], own_included: bool = False) -> None:
    """`gatewayApiKeys`: each client name and key fits the quoted nginx map, no two share a key,
    and (unless the gateway's own clients were already added) no client takes their names.
    Messages never include a key."""
    for name, key in sorted(client_keys.items()):
        if not CLIENT_NAME.fullmatch(name):
            raise ValueError(f"gatewayApiKeys: client name {name!r} must be lowercase letters, digits, - or _")
        if not TOKEN68.fullmatch(key):
            raise ValueError(
                f"gatewayApiKeys: the key of client {name!r} must be 16-256 characters of A-Z a-z 0-9 . _ ~ + / = -"
            )
    if len(set(client_keys.values())) != len(client_keys):
        raise ValueError("gatewayApiKeys: two clients share a key, so the logs could not tell them apart")
    for name in () if own_included else RESERVED_CLIENTS:
        if name in client_keys:
            raise ValueError(f"gatewayApiKeys: the client name `{name}` is the gateway's own; rename that client")


def _decoded(text: object, shape: str) -> object:
    """The JSON a key-map secret holds; the message names its shape, never its text."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(shape) from None


def parse_client_keys(text: object) -> dict[str, str]:
    """`gatewayApiKeys`: a JSON object of client name to key, each fit for the nginx map."""
    shape = "gatewayApiKeys must be a JSON object of client name to key"
    keys = _decoded(text, shape)
    if not isinstance(keys, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
        raise ValueError(shape)
    check_client_keys(keys)
    return keys


def parse_weaviate_keys(text: object) -> dict[str, str]:
    """`weaviateApiKeys`: a JSON object of user to key."""
    keys = _decoded(text, "weaviateApiKeys must be a JSON object of user to key")
    if not isinstance(keys, dict) or not keys:
        raise ValueError("weaviateApiKeys must be a non-empty JSON object of user to key")
    for user, key in keys.items():
        if not isinstance(user, str) or not CLIENT_NAME.fullmatch(user):
            raise ValueError(f"weaviateApiKeys: user {user!r} must be lowercase letters, digits, - or _")
        if not isinstance(key, str) or not TOKEN68.fullmatch(key):
            raise ValueError(f"weaviateApiKeys: the key of {user!r} must be 16-256 of A-Z a-z 0-9 . _ ~ + / = -")
    return keys


@dataclass(frozen=True)
class SecretRule:
    pattern: re.Pattern[str]
    rule: str
    fix: str


_KEY_FIX = "generate one: `openssl rand -base64 32 | pulumi config set --secret {key}`"
RULES: dict[str, SecretRule] = {
    "vllmApiKey": SecretRule(
        TOKEN68,
        "the workers' key must be 16-256 of A-Z a-z 0-9 . _ ~ + / = -: nginx sends it in a quoted "
        "`Authorization: Bearer` header",
        _KEY_FIX,
    ),
    "redisPassword": SecretRule(
        PASSWORD,
        "the Redis password must be 16-256 printable characters without spaces: clients send it as one `AUTH` argument",
        _KEY_FIX,
    ),
    "grafanaAdminPassword": SecretRule(
        PASSWORD,
        "Grafana's admin password must be 16-256 printable characters without spaces",
        _KEY_FIX,
    ),
    "hfToken": SecretRule(
        HEADER_TOKEN,
        "a Hugging Face token is printable ASCII without spaces (e.g. `hf_` and 34 letters): `hf` "
        "sends it in an HTTP header",
        "copy the token from https://huggingface.co/settings/tokens: "
        "`pulumi config set --secret hfToken` and paste it at the prompt",
    ),
    "s3AccessKeyId": SecretRule(
        S3_CREDENTIAL,
        "an S3 access key id is 8-256 of A-Z a-z 0-9 / + = . _ - (no spaces): boto3 signs with it",
        "paste the access key id exactly: `pulumi config set --secret s3AccessKeyId`",
    ),
    "s3SecretAccessKey": SecretRule(
        S3_CREDENTIAL,
        "an S3 secret access key is 8-256 of A-Z a-z 0-9 / + = . _ - (no spaces): boto3 signs with it",
        "paste the secret key exactly, without surrounding spaces or newline: "
        "`pulumi config set --secret s3SecretAccessKey`",
    ),
    "weaviateBackupAccessKeyId": SecretRule(
        S3_CREDENTIAL,
        "an S3 access key id is 8-256 of A-Z a-z 0-9 / + = . _ - (no spaces): Weaviate's "
        "backup-s3 module reads it from its env file",
        "paste the access key id exactly: `pulumi config set --secret weaviateBackupAccessKeyId`",
    ),
    "weaviateBackupSecretAccessKey": SecretRule(
        S3_CREDENTIAL,
        "an S3 secret access key is 8-256 of A-Z a-z 0-9 / + = . _ - (no spaces): Weaviate's "
        "backup-s3 module reads it from its env file",
        "paste the secret key exactly: `pulumi config set --secret weaviateBackupSecretAccessKey`",
    ),
}


def problem(key: str, plaintext: str) -> SecretRule | None:
    """The rule a string secret's plaintext breaks, or None. Never includes the value."""
    if key == "sshPrivateKey":
        return _ssh_key_problem(plaintext)
    if key == "kubeconfig":
        return _kubeconfig_problem(plaintext)
    rule = RULES.get(key)
    if rule is None:
        return None
    if plaintext.lstrip().startswith(("{", "[")) and _is_json_structure(plaintext):
        return SecretRule(
            rule.pattern,
            "this secret is one string, but it holds a structure (set with `--path` under a nested key?)",
            f"`pulumi config rm {key}`, then `pulumi config set --secret {key}` without `--path`",
        )
    return None if rule.pattern.fullmatch(plaintext) else rule


def _is_json_structure(text: str) -> bool:
    try:
        return isinstance(json.loads(text), (dict, list))
    except json.JSONDecodeError:
        return False


def _kubeconfig_problem(plaintext: str) -> SecretRule | None:
    """A kubeconfig is YAML (or JSON) with clusters and contexts (client-go's clientcmd `Config`)."""
    try:
        doc = yaml.safe_load(plaintext)
    except yaml.YAMLError:
        doc = None
    if isinstance(doc, dict) and doc.get("kind", "Config") == "Config" and doc.get("clusters") and doc.get("contexts"):
        return None
    return SecretRule(
        _PEM,
        "the kubeconfig secret must be a kubeconfig file: YAML with `clusters` and `contexts` (`kind: Config`)",
        'pulumi config set --secret kubeconfig "$(kubectl config view --minify --flatten)"',
    )


def _ssh_key_problem(plaintext: str) -> SecretRule | None:
    fix = "`pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519` (an unencrypted key file)"
    if "ENCRYPTED" in plaintext:
        return SecretRule(
            _PEM,
            "the SSH key is passphrase-protected, and the command provider has no way to ask for the passphrase",
            "use a key without a passphrase for deploys, or leave `sshPrivateKey` unset to use the SSH agent",
        )
    if not _PEM.fullmatch(plaintext.strip() + "\n"):
        return SecretRule(
            _PEM,
            "not an SSH private key: it must be a whole `-----BEGIN ... PRIVATE KEY-----` block, as the "
            "key file holds it (a public key or a path is not a private key)",
            fix,
        )
    return None


# What each secret may hold, for the README's config reference (the rules above enforce it).
SHAPES: dict[str, str] = {
    "hfToken": "8-512 printable ASCII, no spaces",
    "sshPrivateKey": "an unencrypted `-----BEGIN … PRIVATE KEY-----` block",
    "s3AccessKeyId": "8-256 of `A-Z a-z 0-9 / + = . _ -`",
    "s3SecretAccessKey": "8-256 of `A-Z a-z 0-9 / + = . _ -`",
    "gatewayApiKeys": "client `[a-z0-9][a-z0-9_-]{0,62}` (not `canary-gate`, `generated`) to a distinct key of "
    "16-256 `A-Z a-z 0-9 . _ ~ + / = -`",
    "redisPassword": "16-256 printable ASCII, no spaces",
    "weaviateApiKeys": "user `[a-z0-9][a-z0-9_-]{0,62}` to a key of 16-256 `A-Z a-z 0-9 . _ ~ + / = -`",
    "weaviateBackupAccessKeyId": "8-256 of `A-Z a-z 0-9 / + = . _ -`",
    "weaviateBackupSecretAccessKey": "8-256 of `A-Z a-z 0-9 / + = . _ -`",
    "grafanaAdminPassword": "16-256 printable ASCII, no spaces",
    "vllmApiKey": "16-256 of `A-Z a-z 0-9 . _ ~ + / = -`",
    "kubeconfig": "a kubeconfig file: YAML with `clusters` and `contexts`",
}
