"""A second `pulumi up` of every shipped stack plans nothing, judged from the inputs alone.

No engine here can run the dev or prod stacks (GPUs, SSH hosts), so each container's create
request is mapped exactly as for the ci stack (`tests/integration/harness.plan_container`), the
daemon's own additions are applied (`tests/integration/plan.engine_inspect`, held against the real
engine's `docker inspect` by `tests/integration/test_stack.py`), the provider's Read
(`stacks.provider_rules.container_state`) turns that into state, and the plan of the unchanged
program against that state must be empty. Under each daemon variant a user's host may have: an API
before 1.44, a dual-stack docker-proxy, and a daemon.json with default log options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from components import hardening
from stacks import provider_rules
from tests.integration import harness, plan
from tools.synth import ROOT, Synth, synth_stack

STACKS = ("ci", "dev", "prod")
# Every option dockerd would merge into a json-file container's log options from daemon.json.
DAEMON_LOG_OPTS = {
    "max-size": "10m",
    "max-file": "3",
    "compress": "false",
    "labels": "team",
    "env": "HOSTNAME",
    "tag": "{{.Name}}",
    "mode": "non-blocking",
    "cache-disabled": "false",
}
VARIANTS: dict[str, dict[str, Any]] = {
    "api-1.41": {"api_version": (1, 41)},
    "api-1.44": {"api_version": (1, 44)},
    "dual-stack-ports": {"ipv6_ports": True},
    "daemon-log-opts": {"daemon_log_opts": DAEMON_LOG_OPTS},
}


@pytest.fixture(scope="module", params=STACKS)
def synth(request: pytest.FixtureRequest) -> Synth:
    return synth_stack(str(request.param), reveal=True)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_container_reads_back_as_written(synth: Synth, variant: str) -> None:
    changes = {}
    for res in synth.of_type(harness.CONTAINER):
        found = plan.diff(harness.CONTAINER, res["inputs"], harness.predicted_state(res, **VARIANTS[variant]))
        if found:
            changes[res["name"]] = [(c.path, c.old, c.new, c.change) for c in found]
    assert changes == {}


def test_the_check_sees_a_value_written_in_another_form(synth: Synth) -> None:
    """The check is not vacuous: a container written the way the program used to write it shows
    the replacement and the updates the real provider would plan."""
    res = next(r for r in synth.of_type(harness.CONTAINER) if r["inputs"].get("healthcheck"))
    old = {**res["inputs"], "cpus": "1", "memorySwap": None}
    old["healthcheck"] = {**old["healthcheck"], "startPeriod": "240s"}
    found = {
        c.path: c.change for c in plan.diff(harness.CONTAINER, old, harness.predicted_state({**res, "inputs": old}))
    }
    assert found == {"cpus": "replace", "memorySwap": "update", "healthcheck.startPeriod": "state"}


def test_every_input_is_classified(synth: Synth) -> None:
    unclassified = set()
    for res in synth.resources:
        if res["type"] in provider_rules.RULES:
            for path in provider_rules.input_paths(res["inputs"]):
                if path not in provider_rules.RULES[res["type"]]:
                    unclassified.add((res["type"], path))
    assert unclassified == set()


def seconds(duration: str) -> float:
    return provider_rules.parse_go_duration(duration) / 1e9


def test_every_wait_and_grace_fits_the_providers_timeouts(synth: Synth) -> None:
    """A create includes the wait for healthy, a delete the stop grace: each within its timeout,
    the provider's 20 minutes unless `customTimeouts` says more."""
    default = provider_rules.DEFAULT_TIMEOUT_SECONDS
    for res in synth.of_type(harness.CONTAINER):
        inputs, custom = res["inputs"], synth.timeouts.get(res["name"], {})
        create = seconds(custom["create"]) if custom.get("create") else default["create"]
        delete = seconds(custom["delete"]) if custom.get("delete") else default["delete"]
        wait = inputs.get("waitTimeout", provider_rules.WAIT_TIMEOUT_DEFAULT) if inputs.get("wait") else 0
        assert wait + hardening.TIMEOUT_MARGIN_SECONDS <= create, (res["name"], wait, create)
        grace = inputs.get("destroyGraceSeconds") or 0
        assert grace + hardening.TIMEOUT_MARGIN_SECONDS <= delete, (res["name"], grace, delete)


def test_a_long_model_load_gets_a_create_timeout_past_20_minutes(tmp_path: Path) -> None:
    """The schema allows a start period whose wait passes the provider's default; the program then
    raises the create timeout instead of letting the create fail at 20 minutes."""
    config = yaml.safe_load((ROOT / "Pulumi.ci.yaml").read_text())
    for group in config["config"]["inference-stack:workers"]:
        group.setdefault("health", {})["startPeriodSeconds"] = 1800
    path = tmp_path / "Pulumi.ci.yaml"
    path.write_text(yaml.safe_dump(config))
    synth = synth_stack("ci", stack_file=path, reveal=True)
    worker = synth.named("chat-local-0")
    wait = worker["inputs"]["waitTimeout"]
    assert wait > 1200
    assert seconds(synth.timeouts["chat-local-0"]["create"]) >= wait + hardening.TIMEOUT_MARGIN_SECONDS


def test_every_container_that_serves_or_stores_stops_gracefully(synth: Synth) -> None:
    """Without destroyGraceSeconds the provider's delete kills at once (stop with t=0)."""
    for res in synth.of_type(harness.CONTAINER):
        labels = {item["label"]: item["value"] for item in res["inputs"].get("labels") or []}
        serves = labels.get("inference-stack.role") in ("gateway", "worker") or res["inputs"].get("mounts")
        if serves:
            assert (res["inputs"].get("destroyGraceSeconds") or 0) > 0, res["name"]
    gateway = synth.named("gateway-nginx")["inputs"]
    nginx_conf = next(u["content"] for u in gateway["uploads"] if u["file"] == "/etc/nginx/nginx.conf")
    shutdown = next(line for line in nginx_conf.splitlines() if line.startswith("worker_shutdown_timeout"))
    bound = int(shutdown.split()[1].rstrip("s;"))
    assert gateway["destroyGraceSeconds"] > bound
