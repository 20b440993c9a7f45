"""Stack files that do not say what their author thinks: each is refused with the key path and
the rule, the way `make render`, `make policy` and `pulumi up` read them (stacks/stackfile.py,
then composition/loader.py), never with a traceback."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from contextlib import redirect_stderr
from pathlib import Path

import pytest
import yaml

from stacks.errors import ConfigError
from stacks.stackfile import read
from stacks.validation import split_config, validate
from tests.helpers import valid_config
from tools import policy_run, render

VALID = yaml.safe_dump({"config": {f"inference-stack:{k}": v for k, v in valid_config().items()}}, sort_keys=False)
HOSTS = "  inference-stack:hosts:\n    - name: gpu-a\n      gpus:\n        count: 2\n"
WORKERS = VALID.split("  inference-stack:workers:")[1]


def refused(text: str, tmp_path: Path) -> ConfigError:
    """The error the stack file `text` is refused with, read as the render reads it."""
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        stack_file = read(path)
        validate("test", *split_config(stack_file.config, stack_file.secret_keys))
    return caught.value


# (id, stack file text, expected key path, fragment of the rule)
CASES: list[tuple[str, str, str, str]] = [
    (
        "namespace-typo",
        VALID + "  inference-stak:redis:\n    enabled: true\n",
        "inference-stak:redis",
        "nothing in this program reads the `inference-stak` namespace",
    ),
    (
        "namespace-transposed",
        VALID + "  infernece-stack:gateway:\n    port: 9000\n",
        "infernece-stack:gateway",
        "so the key would be ignored",
    ),
    (
        "namespace-capitalised",
        VALID + "  Inference-Stack:redis:\n    enabled: true\n",
        "Inference-Stack:redis",
        "nothing in this program reads the `Inference-Stack` namespace",
    ),
    (
        "provider-namespace-typo",
        VALID + "  dokcer:host: unix:///var/run/docker.sock\n",
        "dokcer:host",
        "nothing in this program reads the `dokcer` namespace",
    ),
    (
        "foreign-namespace",
        VALID + "  aws:region: eu-west-1\n",
        "aws:region",
        "nothing in this program reads the `aws` namespace",
    ),
    (
        "duplicate-top-level-key",
        VALID + "  inference-stack:hosts:\n    - name: gpu-b\n",
        "inference-stack:hosts",
        "the key is given twice",
    ),
    (
        "duplicate-nested-key",
        VALID + "  inference-stack:redis:\n    enabled: true\n    enabled: false\n",
        "inference-stack:redis.enabled",
        "YAML keeps only the last",
    ),
    (
        "duplicate-key-in-list-item",
        "config:\n  inference-stack:hosts:\n    - name: gpu-a\n      name: gpu-b\n      gpus: {count: 2}\n"
        "  inference-stack:workers:" + WORKERS,
        "inference-stack:hosts[0].name",
        "the key is given twice",
    ),
    (
        "duplicate-config-block",
        VALID + "config:\n  inference-stack:redis: {}\n",
        "Pulumi.test.yaml: config",
        "the key is given twice",
    ),
    (
        "stack-file-is-a-list",
        "- inference-stack:hosts: []\n",
        "Pulumi.test.yaml",
        "a stack file is a mapping with a `config:` key, not a list",
    ),
    ("stack-file-is-a-scalar", "inference-stack\n", "Pulumi.test.yaml", "not a single value (str)"),
    (
        "config-is-a-list",
        "config:\n  - inference-stack:hosts: []\n",
        "Pulumi.test.yaml: config",
        "`config:` holds `<namespace>:<key>: value` pairs, not a list",
    ),
    ("config-is-a-scalar", "config: inference-stack\n", "Pulumi.test.yaml: config", "not a single value (str)"),
    (
        "invalid-yaml-unclosed",
        VALID + "  inference-stack:redis: {enabled: true\n",
        "Pulumi.test.yaml",
        "not valid YAML",
    ),
    ("invalid-yaml-tab", VALID + "\tinference-stack:redis: {}\n", "Pulumi.test.yaml", "not valid YAML"),
    (
        "invalid-yaml-indent",
        "config:\n  inference-stack:hosts:\n    - name: a\n   gpus: 1\n",
        "Pulumi.test.yaml",
        "not valid YAML",
    ),
    (
        "top-level-key-typo",
        "confg:\n" + VALID.split("config:\n", 1)[1],
        "Pulumi.test.yaml: confg",
        "not a stack file key",
    ),
    (
        "config-key-at-top-level",
        VALID + "inference-stack:redis:\n  enabled: true\n",
        "Pulumi.test.yaml: inference-stack:redis",
        "so everything under it would be ignored",
    ),
    (
        "structured-key-as-broken-json",
        VALID + "  inference-stack:gateway: '{\"port\": 80'\n",
        "inference-stack:gateway",
        "this key holds a structured object or list",
    ),
    ("empty-file", "", "inference-stack:hosts", "required key is missing"),
]


@pytest.mark.parametrize(("text", "path", "rule"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_stack_file_is_refused(text: str, path: str, rule: str, tmp_path: Path) -> None:
    error = refused(text, tmp_path)
    matching = [i for i in error.issues if i.path == path and rule in i.rule]
    assert matching, f"no issue at {path} with {rule!r}:\n{error}"
    assert matching[0].fix


def test_a_namespace_typo_suggests_the_namespace(tmp_path: Path) -> None:
    error = refused(VALID + "  inference-stak:redis:\n    enabled: true\n", tmp_path)
    assert "did you mean `inference-stack:redis`?" in str(error)


def test_valid_file_and_provider_namespaces_pass(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(VALID + "  docker:host: unix:///var/run/docker.sock\n  pulumi:disable-default-providers: []\n")
    stack_file = read(path)
    validate("test", *split_config(stack_file.config, stack_file.secret_keys))


def test_yaml_anchors_are_not_duplicates(tmp_path: Path) -> None:
    text = VALID + "  inference-stack:gateway:\n    rateLimit: &limit {requestsPerSecond: 5, burst: 5}\n"
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(text)
    assert json.loads(read(path).config["inference-stack:gateway"])["rateLimit"]["burst"] == 5


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.test.yaml"
    path.write_bytes(b"config:\n  inference-stack:hosts: \xff\xfe\n")
    with pytest.raises(ConfigError, match="it is not UTF-8 text"):
        read(path)


@pytest.mark.parametrize("case", ["stack-file-is-a-list", "invalid-yaml-unclosed", "duplicate-nested-key"])
def test_render_and_policy_exit_2_without_a_traceback(case: str, tmp_path: Path) -> None:
    text = next(c[1] for c in CASES if c[0] == case)
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(text)
    tools: list[Callable[[list[str]], int]] = [render.main, policy_run.main]
    for tool, extra in zip(tools, [["--out", str(tmp_path / "build")], []], strict=True):
        err = io.StringIO()
        with redirect_stderr(err):
            assert tool(["--stack", "test", "--stack-file", str(path), *extra]) == 2
        assert "Traceback" not in err.getvalue()
        assert "rule:" in err.getvalue() and "fix:" in err.getvalue()
    assert not (tmp_path / "build" / "test").exists()
