"""The provider-rules table covers every input the program sets, and its read-back ports agree
with the Go functions they copy (Go's own test tables) and with a real `docker inspect`."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

import pytest

from stacks import provider_rules as pr
from tests.support.docker_engine import require_engine
from tools.synth import synth_stack


@pytest.mark.parametrize("stack", ["ci", "dev", "prod"])
def test_every_input_the_program_sets_is_classified(stack: str) -> None:
    synth = synth_stack(stack, reveal=True)
    unclassified, seen = set(), 0
    for res in synth.resources:
        if not res["type"].startswith(("docker:", "command:")):
            continue
        for path in pr.input_paths(res["inputs"]):
            seen += 1
            try:
                pr.rule(res["type"], path)
            except pr.UnclassifiedInputError:
                unclassified.add(f"{res['type']} {path}")
    assert seen > 0
    assert not unclassified, "inputs missing from stacks/provider_rules.py RULES:\n" + "\n".join(sorted(unclassified))


def test_an_unknown_path_names_type_and_path() -> None:
    with pytest.raises(KeyError, match=r"docker:index/container:Container.*'gpus'"):
        pr.rule(pr.CONTAINER, "gpus")


def test_every_readback_name_has_a_helper_and_every_source_a_line() -> None:
    for paths in pr.RULES.values():
        for rule in paths.values():
            assert rule.readback == "input" or rule.readback in pr.READBACK
            assert rule.source.rsplit(":", 1)[1].isdigit(), rule.source
            assert rule.change in ("replace", "update", "state")
            assert bool(rule.via) == (rule.change == "update"), rule


def test_input_paths_shapes() -> None:
    inputs = {
        "healthcheck": {"interval": "10s", "tests": ["CMD", "true"]},
        "labels": [{"label": "a", "value": "1"}],
        "logOpts": {"max-size": "10m"},
        "mounts": [],
        "build": {"context": ".", "args": {"A": "1"}},
        "triggers": [{"x": 1}],
        "capabilities": {"drops": ["ALL"]},
    }
    assert pr.input_paths(inputs) == {
        "healthcheck.interval",
        "healthcheck.tests",
        "labels[].label",
        "labels[].value",
        "logOpts",
        "mounts",
        "build.context",
        "build.args",
        "triggers",
        "capabilities.drops",
    }


# kreuzwerker helpers_test.go:31-41 (TestNanoInt64ToDecimalString) at the pinned commit, plus the
# zero-count quirk of helpers.go:142 worked by hand: "10.000000000" has ten zeros.
@pytest.mark.parametrize(
    ("nano", "text"),
    [
        (0, "0"),
        (10**9, "1.0"),
        (15 * 10**8, "1.5"),
        (2 * 10**9, "2.0"),
        (225 * 10**7, "2.25"),
        (5 * 10**8, "0.5"),
        (10 * 10**9, "10."),
        (8 * 10**9, "8.0"),
    ],
)
def test_decimal_cpus(nano: int, text: str) -> None:
    assert pr.decimal_cpus(nano) == text


S, M, H, MS, US = 10**9, 60 * 10**9, 3600 * 10**9, 10**6, 10**3
# Go src/time/time_test.go durationTests (Duration.String and back).
GO_DURATIONS = [
    ("0s", 0),
    ("1ns", 1),
    ("1.1µs", 1100),
    ("2.2ms", 2200 * US),
    ("3.3s", 3300 * MS),
    ("4m5s", 4 * M + 5 * S),
    ("4m5.001s", 4 * M + 5001 * MS),
    ("5h6m7.001s", 5 * H + 6 * M + 7001 * MS),
    ("8m0.000000001s", 8 * M + 1),
    ("2562047h47m16.854775807s", 2**63 - 1),
    ("-2562047h47m16.854775808s", -(2**63)),
    ("4m0s", 240 * S),
    ("10s", 10 * S),
    ("1.5s", 15 * 10**8),
    ("1h30m0s", 90 * M),
]


@pytest.mark.parametrize(("text", "ns"), GO_DURATIONS)
def test_go_duration_round_trip(text: str, ns: int) -> None:
    assert pr.go_duration(ns) == text
    assert pr.parse_go_duration(text) == ns
    if ns > 0:
        assert pr.go_duration(-ns) == "-" + text


# Go src/time/time_test.go parseDurationTests and parseDurationErrorTests.
@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("-0", 0),
        ("+5s", 5 * S),
        ("5.s", 5 * S),
        (".5s", 500 * MS),
        ("1.0040s", S + 4 * MS),
        ("100.00100s", 100 * S + MS),
        ("11us", 11 * US),
        ("12µs", 12 * US),
        ("12μs", 12 * US),
        ("10.5s4m", 4 * M + 10 * S + 500 * MS),
        ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
        ("1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5 * US + 6),
        ("9223372036854775.807us", 2**63 - 1),
        ("9223372036s854ms775us807ns", 2**63 - 1),
        ("-9223372036854775808ns", -(2**63)),
        ("0.100000000000000000000h", 6 * M),
        ("0.830103483285477580700h", 49 * M + 48 * S + 372539827),
    ],
)
def test_parse_go_duration(text: str, ns: int) -> None:
    assert pr.parse_go_duration(text) == ns


@pytest.mark.parametrize(
    "text",
    [
        *("", "3", "-", "s", ".", "-.", ".s", "+.s", "1d", "\ufffd", "3000000h", "9223372036854775808ns"),
        *("-9223372036854775809ns", "9223372036854775.808us", "9223372036854ms775us808ns"),
    ],
)
def test_parse_go_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="time: "):
        pr.parse_go_duration(text)


def _image(docker: str) -> str:
    for tag in ("inference-stack-layout-test:empty", "inference-stack-rules-test:empty"):
        if subprocess.run([docker, "image", "inspect", tag], capture_output=True).returncode == 0:
            return tag
    tar = subprocess.run(["tar", "cf", "-", "--files-from", "/dev/null"], capture_output=True, check=True).stdout
    tag = "inference-stack-rules-test:empty"
    subprocess.run([docker, "import", "-", tag], input=tar, capture_output=True, check=True)
    return tag


def test_container_state_from_a_real_inspect() -> None:
    docker = require_engine()
    name = f"provider-rules-{uuid.uuid4().hex[:8]}"
    image = _image(docker)
    check = {"tests": ["CMD-SHELL", "true"], "interval": "240s", "startPeriod": "240s"}
    inputs: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": ["/nonexistent"],
        "memory": 64,
        "cpus": "2",
        "healthcheck": check,
        "restart": "no",
        "envs": ["A=1"],
    }
    # Created, never started: the image has no binary. The CLI writes --health-cmd as CMD-SHELL.
    create = [docker, "create", "--name", name, "--memory", "64m", "--cpus", "2", "--health-cmd", "true"]
    create += ["--health-interval", "240s", "--health-start-period", "240s", "-e", "A=1", image, "/nonexistent"]
    subprocess.run(create, capture_output=True, check=True)
    try:
        inspect = json.loads(subprocess.run([docker, "inspect", name], capture_output=True, check=True).stdout)[0]
    finally:
        subprocess.run([docker, "rm", "-f", name], capture_output=True, check=True)
    state = pr.container_state(inspect, inputs)
    assert state["cpus"] == "2.0"
    assert state["memory"] == 64
    assert state["memorySwap"] == 128  # dockerd's 2x default, not an input
    assert state["healthcheck"]["startPeriod"] == "4m0s"
    assert state["healthcheck"]["interval"] == "4m0s"
    assert state["healthcheck"]["timeout"] == "0s"
    assert state["name"] == name
    assert state["envs"] == ["A=1"]  # Read leaves env alone
    changed = {p for p in ("cpus", "memory", "memorySwap") if state.get(p) != inputs.get(p)}
    changed |= {f"healthcheck.{k}" for k, v in check.items() if state["healthcheck"][k] != v}
    plan = {p: pr.rule(pr.CONTAINER, p).change for p in changed}
    assert plan == {
        "cpus": "replace",
        "memorySwap": "update",
        "healthcheck.interval": "state",
        "healthcheck.startPeriod": "state",
    }
    # Written in the read-back form, nothing diffs.
    canonical_check = check | {"interval": "4m0s", "startPeriod": "4m0s"}
    canonical = inputs | {"cpus": "2.0", "memorySwap": 128, "healthcheck": canonical_check}
    again = pr.container_state(inspect, canonical)
    assert {k: again[k] for k in canonical if k != "healthcheck"} == {
        k: v for k, v in canonical.items() if k != "healthcheck"
    }
    assert {k: again["healthcheck"][k] for k in canonical_check} == canonical_check
