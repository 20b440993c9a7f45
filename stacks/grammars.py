"""The grammars of values the stack hands to another program: Docker image references, host
names and addresses, SSH host keys, host paths, Hugging Face repo ids, S3 locations and regions.
Each cites the receiver whose rule it follows, so a value refused here is one that receiver
would have refused later, on a host, after something was already deployed."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from stacks.host_paths import host_path_problem
from stacks.schema import rule_error

# Docker's image reference grammar, from distribution/reference's regexp.go (the parser the Docker
# engine uses): `name[:tag][@digest]`, where name is `[domain[:port]/]path` with lowercase path
# components. Go's `\w` is ASCII, so it is spelled out. Digests are limited to sha256, the one
# algorithm registries serve (go-digest's sha256 encoding: 64 lowercase hex).
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"


_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"


_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"


_IMAGE_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"


_IMAGE_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"


_IMAGE_DIGEST = r"sha256:[a-f0-9]{64}"


IMAGE_REFERENCE = re.compile(rf"({_IMAGE_NAME})(?::({_IMAGE_TAG}))?(?:@({_IMAGE_DIGEST}))?")


# distribution/reference's RepositoryNameTotalLengthMax.
IMAGE_NAME_MAX = 255


def _malformed_image(value: str) -> PydanticCustomError:
    if re.search(r"\s", value):
        why = "it contains whitespace"
    elif "@" in value and not re.search(rf"@{_IMAGE_DIGEST}$", value):
        why = "its digest is not `sha256:` and 64 lowercase hex digits"
    elif IMAGE_REFERENCE.fullmatch(value.lower()):
        why = "a repository name must be lowercase"
    else:
        why = "it does not follow Docker's `[registry[:port]/]name[:tag][@sha256:digest]` grammar"
    return rule_error(
        f"not an image reference Docker can pull: {why}",
        "write it like `vllm/vllm-openai:v0.32.0`, `registry.example:5000/team/vllm:v0.32.0` or "
        "`image@sha256:<64 hex>`",
    )


def _uppercase_hub_name(name: str) -> bool:
    """`Vllm/vllm`: Docker would take `Vllm` for a registry host (normalize.go's splitDockerDomain
    counts a first component as a domain only with a `.`, a `:`, `localhost` or an uppercase
    letter); meant is the Docker Hub organisation, whose names are lowercase."""
    first, slash, _ = name.partition("/")
    return bool(slash) and not re.search(r"[.:]", first) and first != "localhost" and first != first.lower()


def check_pinned_image(value: str) -> str:
    """Images must be a valid reference that names an immutable version: a tag other than
    `latest`, or a digest. Docker (`docker pull` in pull-images.sh and the provider's image
    resolution) receives it as is."""
    match = IMAGE_REFERENCE.fullmatch(value)
    if value and (match is None or _uppercase_hub_name(match.group(1))):
        raise _malformed_image(value)
    name, tag, digest = match.groups() if match else ("", None, None)
    if len(name) > IMAGE_NAME_MAX:
        raise rule_error(
            f"the repository name is longer than Docker's {IMAGE_NAME_MAX} characters", "use the registry's real name"
        )
    if digest is not None:
        return value
    if not name or not tag:
        raise rule_error(
            "the image has no tag, so Docker pulls `latest` and every host may run a different build",
            "pin a release tag or a digest, e.g. `vllm/vllm-openai:v0.32.0` or `image@sha256:<digest>`",
        )
    if tag == "latest":
        raise rule_error(
            "`latest` moves between pulls, so two hosts (or two `pulumi up`s) can run different builds",
            f"pin a release tag instead, e.g. `{name}:v0.32.0`, or a digest",
        )
    return value


PinnedImage = Annotated[
    str,
    AfterValidator(check_pinned_image),
    Field(json_schema_extra={"allowed": "`[registry[:port]/]name:tag` or `name@sha256:<64 hex>`; not `latest`"}),
]
"""An image reference pinned to a release tag or a digest."""


def is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_hostname(value: str) -> bool:
    """RFC 1123 host name: dot-separated labels of letters, digits and inner `-`, 253 at most,
    and not all digits (that is an IPv4 address, checked apart)."""
    label = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    return (
        len(value) <= 253
        and re.fullmatch(rf"{label}(?:\.{label})*\.?", value) is not None
        and not re.fullmatch(r"[0-9.]+", value)
    )


# Host key algorithms OpenSSH offers (ssh(1) HostKeyAlgorithms, OpenSSH 9.x), certificates aside.
# DSA is gone from OpenSSH 9.8 on and never pinned here.
HOST_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


def host_key_problem(line: str) -> str | None:
    """Why `line` is not `<type> <base64 blob> [comment]`, or None. The blob is RFC 4253 section
    6.6's public key encoding, which starts with the key type as a length-prefixed string: a key
    pasted under the wrong type, or cut short, is caught here rather than at the first connect."""
    words = line.split()
    if len(words) < 2:
        return "expected `<type> <base64 key>`"
    kind, blob = words[0], words[1]
    if kind not in HOST_KEY_TYPES:
        return f"`{kind}` is not a host key type ({', '.join(sorted(HOST_KEY_TYPES))})"
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return "the key is not base64"
    length = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    embedded = raw[4 : 4 + length] if length > 0 else b""
    if embedded != kind.encode():
        return f"the key's own type is not `{kind}`"
    if len(raw) <= 4 + length:
        return "the key has no key material after its type"
    return None


HOST_PATH_ALLOWED = "absolute, `[A-Za-z0-9._+-]` between single slashes; not in system or broad directories"


REGION_ALLOWED = "AWS region (`eu-west-1`); with a custom endpoint, one DNS label"


def check_host_path(value: str, receiver: str, fix: str) -> str:
    """A host directory the stack creates, chowns or binds (stacks/host_paths.py has the list of
    places it refuses), without its trailing slash."""
    problem = host_path_problem(value)
    if problem is not None:
        raise rule_error(f"the path {problem}; {receiver}", fix)
    return value.rstrip("/")


def hf_repo_problem(repo_id: str) -> str | None:
    """Why `repo_id` is not `org/name` by huggingface_hub's validate_repo_id, or None. Its regex
    `^(\\b[\\w\\-.]+\\b/)?\\b[\\w\\-.]{1,96}\\b$` is unicode there; the Hub itself takes ASCII only, so
    `\\w` is spelled `[A-Za-z0-9_]`. `\\b` on both ends means each part starts and ends with one of
    those (never `-` or `.`). The stack also needs the `org/` part: the cache layout is
    `models--org--name`."""
    part = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
    org, slash, name = repo_id.partition("/")
    if not slash or not re.fullmatch(part, org) or not re.fullmatch(part, name):
        return "expected `org/name` of ASCII letters, digits, `.`, `_`, `-`; no part starts or ends in `-` or `.`"
    if len(name) > 96:
        return "the name part is longer than 96 characters"
    if "--" in repo_id or ".." in repo_id:
        return "`--` and `..` are not allowed"
    if repo_id.endswith(".git"):
        return "it ends in `.git`"
    return None


# s3://bucket/prefix: S3's bucket naming rules, and a prefix of the safe key characters AWS
# lists (letters, digits, `.`, `_`, `-`) between single slashes, without `.` or `..` parts.
S3_PART = r"(?!\.\.?(?:/|$))[A-Za-z0-9._-]+"


S3_SOURCE = rf"s3://[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9](?:/(?:{S3_PART}(?:/{S3_PART})*/?)?)?"


def endpoint_url_ok(url: str) -> bool:
    """`http(s)://host[:port][/path]`, host a DNS name, IPv4 or bracketed IPv6: what botocore's
    is_valid_endpoint_url accepts, minus userinfo (a key in a URL ends up in logs), query and
    fragment."""
    match = re.fullmatch(r"https?://([^/:\[\]]+|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?(/[A-Za-z0-9._~/-]*)?", url)
    if match is None or (match.group(2) is not None and not 1 <= int(match.group(2)) <= 65535):
        return False
    host = match.group(1)
    return is_ip_address(host.strip("[]")) if host.startswith("[") else is_hostname(host) or is_ip_address(host)


def host_port_ok(value: str) -> bool:
    """`host[:port]` with a DNS name or IPv4 address and a port in 1-65535."""
    host, colon, port = value.partition(":")
    if colon and not (port.isdigit() and 1 <= int(port) <= 65535):
        return False
    return is_hostname(host) or (is_ip_address(host) and ":" not in host)


# AWS regions: the partitions' regionRegex in botocore's endpoints.json (`^(us|eu|ap|sa|ca|me|af|il|mx)
# \-\w+\-\d+$`, `^cn\-\w+\-\d+$`, `^us\-gov\-\w+\-\d+$`, `^us\-iso\-\w+\-\d+$`, `^eusc\-(de)\-\w+\-\d+$`...),
# as one grammar. Another S3 service names its region as it likes; botocore's validate_region_name
# then only needs a DNS label (the region goes into endpoint host names).
AWS_REGION = r"[a-z]{2,4}(?:-[a-z]+){1,3}-\d{1,2}"


ANY_REGION = r"(?![0-9]+$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"


def check_region(value: str | None, custom_endpoint: bool) -> str | None:
    if value is None:
        return value
    if re.fullmatch(AWS_REGION, value) or (custom_endpoint and re.fullmatch(ANY_REGION, value)):
        return value
    if custom_endpoint:
        rule = "a region is one DNS label (letters, digits, inner `-`): boto3 puts it into host names"
    else:
        rule = "not an AWS region like `eu-west-1` (botocore's endpoints.json grammar); boto3 puts it into host names"
    raise rule_error(rule, "use the bucket's region, e.g. `us-east-1`, or what your S3 service calls its region")
