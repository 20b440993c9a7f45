"""The `ci` stack on a real Docker engine: what `pulumi up` would create, serving, observed and
surviving a dead worker.

The harness (tests/integration/harness/) creates the containers `make render STACK=ci`
synthesizes, from images built out of Debian packages under the names the stack pins
(tests/integration/images/). Three real vLLM 0.32 CPU workers serve SmolLM2-135M from the
read-only model cache, behind the generated nginx config, with Redis and Prometheus. Traffic goes
only to the 127.0.0.1-published gateway and Prometheus ports and to the test's own containers.
Every load loop is bounded in count and time. GPU device requests, remote SSH providers, Grafana,
Weaviate and Jaeger are outside what this can run; synth and policy tests cover them.
"""

from __future__ import annotations

import copy
import dataclasses
import filecmp
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import hardening
from components.gateway import routing
from components.observability.grafana import dashboard_exprs
from components.observability.prometheus import alert_rules, recording_rules
from components.workers.files import canary_gate, healthcheck
from stacks import provider_rules
from tests.components.observability.test_prometheus import RECORDED, SLO, get_json, metric_names, query
from tests.integration import harness, plan
from tests.support import wrong_release
from tests.support.docker_engine import require_engine
from tests.support.model_server import model_path, require_model_server
from tests.support.outputs import stack_outputs
from tools.synth import ROOT, Synth, synth_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CLIENT_KEY = "sk-ci-0123456789abcdef"
REDIS_PASSWORD = "ci-redis-password-0123456789"
SECRETS = {
    "gatewayApiKeys": json.dumps({"ci": CLIENT_KEY}),
    "vllmApiKey": "wk-ci-0123456789abcdef",
    "redisPassword": REDIS_PASSWORD,
}
GATEWAY = "http://127.0.0.1:18080"
PROMETHEUS = "http://127.0.0.1:19090"
MODEL = "smollm2-135m"
WORKERS = ["chat-local-0", "chat-local-1", "chat-local-2"]
# Series the dashboards and rules take from jobs this stack does not run (no GPU here).
NOT_HERE = ("DCGM_",)


def wait(what: str, check: Any, timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def chat(prompt: str = healthcheck.QUESTION, max_tokens: int = 16, key: str | None = CLIENT_KEY) -> tuple[int, str]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    request = urllib.request.Request(
        f"{GATEWAY}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)["choices"][0]["message"]["content"]
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def get(url: str, key: str | None = CLIENT_KEY) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def created_at(info: dict[str, Any]) -> float:
    """A container's creation time (Docker gives nanoseconds; Python parses microseconds)."""
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", info["Created"]).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


def docker(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, check=check, timeout=120)


def health(container: str) -> str:
    return str(harness.inspect(container)["State"].get("Health", {}).get("Status"))


@pytest.fixture(scope="module")
def synth() -> Synth:
    return synth_stack("ci", secrets=SECRETS, reveal=True)


@pytest.fixture(scope="module")
def stack(synth: Synth) -> Iterator[harness.Applied]:
    require_engine()
    require_model_server()
    started = time.monotonic()
    built = harness.ensure_stack_images(synth)
    images_seconds = time.monotonic() - started
    harness.seed_model_cache(synth)
    harness.teardown()  # what a failed earlier run may have left
    started = time.monotonic()
    applied = harness.apply(synth)
    print(
        f"\nimages: {images_seconds:.1f} s ({ {k: round(v, 1) for k, v in built.items() if v} or 'all cached' });"
        f" apply: {time.monotonic() - started:.1f} s; per container: "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sorted(applied.seconds.items()))
    )
    try:
        yield applied
    finally:
        harness.teardown(only=applied)


# 1. Health -----------------------------------------------------------------------------------------


def test_every_container_is_healthy_and_workers_passed_the_model_probe(stack: harness.Applied, synth: Synth) -> None:
    for res in synth.of_type(harness.CONTAINER):
        info = stack.inspect(res["name"])
        assert info["State"]["Running"], res["name"]
        if res["inputs"].get("healthcheck"):
            assert info["State"]["Health"]["Status"] == "healthy", (res["name"], info["State"]["Health"]["Log"][-1:])
    for worker in WORKERS:
        # The probe passes only on a standalone 4 (tests/components/workers/test_healthcheck.py).
        # Docker keeps the last 5 results (50 s); in between, checks say "passed recently", and the
        # probe itself runs again once probeEveryMinutes (1 in ci) has passed.
        def probed(name: str = worker) -> bool:
            outputs = [entry["Output"] for entry in stack.inspect(name)["State"]["Health"]["Log"]]
            return any(o.startswith("healthy (model probe answered") for o in outputs)

        wait(f"{worker}'s health log to show the model probe's answer", probed, 120, 2)
        # The weights came from the read-only cache, offline: nothing else could have served them.
        cache = next(m for m in stack.inspect(worker)["Mounts"] if m["Destination"] == "/root/.cache/huggingface")
        assert cache["RW"] is False


def expected_mismatches(inputs: dict[str, Any], info: dict[str, Any]) -> list[str]:
    """Every input the program sets, against what `docker inspect` shows the engine made of it."""
    config, host, problems = info["Config"], info["HostConfig"], []
    mb = 1024 * 1024

    def check(what: str, want: Any, got: Any) -> None:
        if want != got:
            problems.append(f"{what}: synthesized {want!r}, engine {got!r}")

    check("name", "/" + inputs["name"], info["Name"])
    for key, field in (("entrypoints", "Entrypoint"), ("command", "Cmd"), ("hostname", "Hostname"), ("user", "User")):
        if key in inputs:
            check(key, inputs[key], config[field])
    check("envs", set(), set(inputs.get("envs", [])) - set(config["Env"]))
    labels = {item["label"]: item["value"] for item in inputs.get("labels", [])}
    check("labels", labels, {k: config["Labels"].get(k) for k in labels})
    if "stopSignal" in inputs:
        check("stopSignal", inputs["stopSignal"], config["StopSignal"])
    if "stopTimeout" in inputs:
        check("stopTimeout", inputs["stopTimeout"], config["StopTimeout"])
    if "healthcheck" in inputs:
        hc = inputs["healthcheck"]
        check("healthcheck.tests", hc["tests"], config["Healthcheck"]["Test"])
        check("healthcheck.retries", hc["retries"], config["Healthcheck"]["Retries"])
        for key, field in (("interval", "Interval"), ("timeout", "Timeout"), ("startPeriod", "StartPeriod")):
            check(f"healthcheck.{key}", harness.duration_ns(hc[key]), config["Healthcheck"][field])
    check("memory", inputs.get("memory", 0) * mb, host["Memory"])
    check("memoryReservation", inputs.get("memoryReservation", 0) * mb, host["MemoryReservation"])
    if "cpus" in inputs:
        check("cpus", round(float(inputs["cpus"]) * 1e9), host["NanoCpus"])
    if "cpuShares" in inputs:
        check("cpuShares", inputs["cpuShares"], host["CpuShares"])
    if "shmSize" in inputs:
        check("shmSize", inputs["shmSize"] * mb, host["ShmSize"])
    check("restart", inputs.get("restart", "no"), host["RestartPolicy"]["Name"])
    if "maxRetryCount" in inputs:
        check("maxRetryCount", inputs["maxRetryCount"], host["RestartPolicy"]["MaximumRetryCount"])
    if "logDriver" in inputs:
        check("logDriver", inputs["logDriver"], host["LogConfig"]["Type"])
        check("logOpts", inputs.get("logOpts", {}), host["LogConfig"]["Config"])
    check("readOnly", bool(inputs.get("readOnly")), host["ReadonlyRootfs"])
    check("tmpfs", inputs.get("tmpfs", {}), host.get("Tmpfs") or {})
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    for mount in inputs.get("mounts", []):
        got = mounts.get(mount["target"])
        check(f"mount {mount['target']}", True, got is not None)
        if got is not None:
            check(f"mount {mount['target']} read-only", bool(mount.get("readOnly")), not got["RW"])
    for volume in inputs.get("volumes", []):
        check(f"volume {volume['containerPath']}", True, volume["containerPath"] in mounts)
    bindings = {
        (int(port.split("/")[0]), b["HostIp"], int(b["HostPort"]))
        for port, binds in (host.get("PortBindings") or {}).items()
        for b in binds or []
    }
    wanted = {(p["internal"], p["ip"], p["external"]) for p in inputs.get("ports", [])}
    check("ports", wanted, bindings)
    networks = info["NetworkSettings"]["Networks"]
    for net in inputs.get("networksAdvanced", []):
        check(f"network {net['name']}", True, net["name"] in networks)
        for alias in net.get("aliases", []):
            check(f"network {net['name']} alias", True, alias in (networks.get(net["name"], {}).get("Aliases") or []))
    caps = inputs.get("capabilities") or {}
    check("capabilities.adds", sorted(caps.get("adds", [])), sorted(host.get("CapAdd") or []))
    check("capabilities.drops", sorted(caps.get("drops", [])), sorted(host.get("CapDrop") or []))
    check("securityOpts", sorted(inputs.get("securityOpts", [])), sorted(host.get("SecurityOpt") or []))
    return problems


def test_every_container_matches_its_synthesized_inputs(stack: harness.Applied, synth: Synth) -> None:
    """The containers on the engine are the ones the program declares: `docker inspect` of each,
    field by field, against its synthesized inputs."""
    problems = {
        res["name"]: found
        for res in synth.of_type(harness.CONTAINER)
        if (found := expected_mismatches(res["inputs"], stack.inspect(res["name"])))
    }
    assert not problems, json.dumps(problems, indent=1)
    # The comparison can fail: a gateway that differs in memory, env and port is caught on all three.
    gateway = synth.named("gateway-nginx")["inputs"]
    changed = {**gateway, "memory": gateway["memory"] + 1, "envs": ["EXTRA=1"]}
    changed["ports"] = [{**gateway["ports"][0], "external": 1}]
    found = expected_mismatches(changed, stack.inspect("gateway-nginx"))
    assert [p.split(":")[0] for p in found] == ["envs", "memory", "ports"], found


# 2. Serving ----------------------------------------------------------------------------------------


def test_the_openai_client_gets_answers_through_the_gateway(stack: harness.Applied) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=60)
    # The health probe's question and check: every answer within its margin holds the 4 in at
    # least five tokens (tests/components/workers/test_healthcheck.py).
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": healthcheck.QUESTION}],
        temperature=0,
        max_tokens=32,
        stream=True,
    )
    chunks = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(chunks) >= 3 and healthcheck.ANSWER.search("".join(chunks)), chunks
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": healthcheck.QUESTION}], temperature=0, max_tokens=32
    )
    assert healthcheck.ANSWER.search(reply.choices[0].message.content or ""), reply


def test_the_printed_first_request_commands_get_the_models_answer(stack: harness.Applied) -> None:
    """`firstRequest`, as `make up` prints it: curl, then the openai client, run as one bash script
    with the generated key. python3 is this venv's, which has openai."""
    first = stack_outputs("ci", secrets=SECRETS)["firstRequest"]
    assert first.secret
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", first.value], capture_output=True, text=True, timeout=120, env=env
    )
    print(f"\n$ pulumi stack output firstRequest --show-secrets\n{first.value}\n--- output ---\n{run.stdout}")
    assert run.returncode == 0, run.stderr
    # curl's JSON reply on the first line (`-w '\n'`), then the client's printed answer.
    reply, answer = run.stdout.split("\n", 1)
    content = json.loads(reply)["choices"][0]["message"]["content"]
    assert healthcheck.ANSWER.search(content), reply
    assert healthcheck.ANSWER.search(answer), answer


def test_no_key_is_401_metrics_is_404_and_over_the_limit_is_429(stack: harness.Applied) -> None:
    assert chat(key=None)[0] == 401
    assert get(f"{GATEWAY}/metrics") == 404
    # rateLimit: 20 r/s with a burst of 20 per client; 60 requests at once must overflow it.
    with ThreadPoolExecutor(30) as pool:
        codes = list(pool.map(lambda _: get(f"{GATEWAY}/v1/models"), range(60)))
    print(f"60 concurrent /v1/models: {sorted((c, codes.count(c)) for c in set(codes))}")
    assert 429 in codes and 200 in codes and set(codes) <= {200, 429}
    # The bucket refills at 20 r/s: the client is served again within seconds.
    wait("the rate limit to let the client through again", lambda: get(f"{GATEWAY}/v1/models") == 200, 10, 0.5)
    # A full burst drains in burst / rate = 1 s; leave the next test the whole bucket.
    time.sleep(1.5)


# 3. Observation ------------------------------------------------------------------------------------


def test_prometheus_sees_every_worker_and_every_vllm_and_gateway_expression_has_data(stack: harness.Applied) -> None:
    def vllm_targets() -> list[dict[str, Any]]:
        active = get_json(f"{PROMETHEUS}/api/v1/targets")["data"]["activeTargets"]
        up = [t for t in active if t["labels"]["job"] == "vllm" and t["health"] == "up"]
        return up if len(up) == 3 else []

    targets = wait("three vLLM targets up", vllm_targets, 60)
    assert {t["labels"]["replica"] for t in targets} == {"0", "1", "2"}
    for i in range(6):
        assert chat(f"Count from {i} to {i + 3}.")[0] == 200
    # Two scrapes (2 s apart) after the requests, so rate() has both ends.
    time.sleep(6)

    def here(expr: str) -> bool:
        return not any(m.startswith(NOT_HERE) for m in metric_names(expr))

    with_data = [(f"dashboard: {n}", e) for n, e in dashboard_exprs() if here(e)]
    with_data += [(str(r["record"]), str(r["expr"])) for r in recording_rules() if here(str(r["expr"]))]
    # Alert expressions are empty while nothing is wrong: they must evaluate, not return data.
    alerts = [(str(r["alert"]), str(r["expr"])) for r in alert_rules(SLO) if here(str(r["expr"]))]
    for name, expr in with_data + alerts:
        answer = query(PROMETHEUS, expr)
        assert answer["status"] == "success", (name, answer)
    empty = [(name, expr) for name, expr in with_data if not query(PROMETHEUS, expr)["data"]["result"]]
    assert not empty, empty
    print(f"{len(with_data)} dashboard and recording expressions with data; {len(alerts)} alert expressions evaluated")
    wait(
        "every recording rule to have written a series",
        lambda: set(get_json(f"{PROMETHEUS}/api/v1/label/__name__/values")["data"]) >= RECORDED,
        30,
    )


# 4. Failure ----------------------------------------------------------------------------------------


def test_a_killed_worker_costs_no_new_request_and_comes_back(stack: harness.Applied) -> None:
    victim = "chat-local-1"
    before = stack.inspect(victim)
    results: list[tuple[float, int]] = []
    killed_at: list[float] = []

    def one(i: int) -> None:
        started = time.monotonic()
        code, _ = chat(f"Say the number {i}.", max_tokens=8)
        results.append((started, code))

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(one, i) for i in range(8)]
        time.sleep(1.0)
        # A crash, not a stop: SIGKILL to the worker's main process from the host.
        os.kill(int(before["State"]["Pid"]), signal.SIGKILL)
        killed_at.append(time.monotonic())
        futures += [pool.submit(one, i) for i in range(8, 40)]
        deadline = time.monotonic() + 300
        for future in futures:
            future.result(timeout=max(1.0, deadline - time.monotonic()))
    kill = killed_at[0]
    after_kill = [code for started, code in results if started > kill]
    in_flight = [code for started, code in results if started <= kill]
    print(
        f"requests: {len(results)}; started after the kill: {len(after_kill)}, failed "
        f"{sum(c != 200 for c in after_kill)}; in flight at the kill: {len(in_flight)}, failed "
        f"{sum(c != 200 for c in in_flight)}"
    )
    assert len(results) == 40
    if not (after_kill and all(code == 200 for code in after_kill)):
        router = docker("logs", "--tail", "60", stack.names["gateway-router-chat"], check=False)
        raise AssertionError(f"{after_kill}\nthe chat router's log:\n{router.stdout}{router.stderr}")

    # First the restart (until the daemon has handled the exit, the old health status still reads
    # healthy), then health.
    wait("the restart policy to restart the killed worker", lambda: stack.inspect(victim)["RestartCount"] >= 1, 120, 1)
    wait("the killed worker to be healthy again", lambda: health(stack.containers[victim]) == "healthy", 300, 2)
    info = stack.inspect(victim)
    assert info["RestartCount"] >= 1 and info["Id"] == before["Id"]
    print(
        f"{victim} healthy again {time.monotonic() - kill:.1f} s after the kill (restart count {info['RestartCount']})"
    )

    # Back in rotation: its own counter of finished requests moves when traffic goes through the gateway.
    worker_url = stack.url(victim, 8000)

    def served() -> float:
        with urllib.request.urlopen(f"{worker_url}/metrics", timeout=10) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("vllm:request_success_total{")
        )

    baseline = served()

    def round_of_traffic() -> bool:
        with ThreadPoolExecutor(6) as pool:
            assert all(code == 200 for code, _ in pool.map(lambda i: chat(f"Say {i}.", max_tokens=4), range(18)))
        return served() > baseline

    # The prefix-cache router (the ci stack's `balance: cache_aware`) takes a worker back after
    # two passing health checks of its own, 10 s apart: rounds of traffic until it does, bounded.
    wait("the gateway to send the restarted worker traffic again", round_of_traffic, 90, 1)


def router_workers(stack: harness.Applied, router: str) -> set[str]:
    """The workers a router routes to, from its own API (the image has Python, not wget)."""
    api = f"http://127.0.0.1:{routing.PORT}/list_workers"
    probe = f"import urllib.request; print(urllib.request.urlopen({api!r}).read().decode())"
    return set(json.loads(docker("exec", stack.names[router], "python3", "-c", probe).stdout)["urls"])


def test_the_router_knows_every_worker_and_a_restarted_one_comes_back_with_them(stack: harness.Applied) -> None:
    """`balance: cache_aware`: nginx's chat upstream is the pool's router, which lists every stable
    worker (their admits reached its API); restarted, it starts from the record on the volume with
    the same workers, and requests flow through it again."""
    members = docker(
        "exec", stack.names["gateway-nginx"], "sh", "-c", "cat /etc/nginx/inference-stack/members/chat/*.conf"
    ).stdout
    expected = {f"http://{line.split()[1].rstrip(';')}" for line in members.splitlines() if line.startswith("server")}
    assert len(expected) == len(WORKERS)
    assert router_workers(stack, "gateway-router-chat") == expected
    assert router_workers(stack, "gateway-router-chat-canary") == set()
    docker("restart", stack.names["gateway-router-chat"])
    wait("the restarted router to be healthy", lambda: health(stack.names["gateway-router-chat"]) == "healthy", 90, 1)
    assert router_workers(stack, "gateway-router-chat") == expected
    with ThreadPoolExecutor(3) as pool:
        codes = list(pool.map(lambda i: chat(f"Say {i}.", max_tokens=4)[0], range(9)))
    assert codes == [200] * 9, codes


# 5. Redis ------------------------------------------------------------------------------------------


def test_redis_requires_auth_and_keeps_data_over_a_restart(stack: harness.Applied) -> None:
    name = stack.names["redis"]
    noauth = docker("exec", name, "redis-cli", "ping", check=False)
    assert "NOAUTH" in noauth.stdout + noauth.stderr, noauth

    def authed(command: str) -> subprocess.CompletedProcess[str]:
        # The password goes in on stdin (AUTH), never on argv.
        return subprocess.run(
            ["docker", "exec", "-i", name, "redis-cli"],
            input=f"AUTH {REDIS_PASSWORD}\n{command}\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    session = authed("SET integration:aof kept")
    assert session.stdout.split() == ["OK", "OK"], session
    docker("restart", name)
    wait("redis healthy after the restart", lambda: health(name) == "healthy", 60)
    again = authed("GET integration:aof")
    assert again.stdout.split() == ["OK", "kept"], again


# 6. Idempotence ------------------------------------------------------------------------------------

MOVING = ("State", "ExecIDs", "RestartCount", "LogPath", "Mounts")


def test_a_second_apply_plans_nothing_and_a_second_render_is_identical(
    stack: harness.Applied, synth: Synth, tmp_path: Path
) -> None:
    """The bar of Terratest's idempotence check and ProgramTest's empty preview: diffed against the
    state the provider read back from `docker inspect`, the unchanged program plans nothing."""
    before = {name: stack.inspect(name) for name in stack.containers}
    started = time.monotonic()
    again = harness.apply(synth)
    print(f"second apply: {time.monotonic() - started:.1f} s")
    assert again.plan.changed() == {}, again.plan.render()
    assert again.commands_run == []
    assert again.containers == stack.containers
    assert set(again.actions[name] for name in again.containers) == {"kept"}
    for name, old in before.items():
        new = harness.inspect(again.containers[name])
        assert {k: v for k, v in new.items() if k not in MOVING} == {k: v for k, v in old.items() if k not in MOVING}
    for out in ("a", "b"):
        subprocess.run(
            [sys.executable, "-m", "tools.render", "--stack", "ci", "--out", str(tmp_path / out)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    comparison = filecmp.dircmp(tmp_path / "a", tmp_path / "b")
    assert not comparison.diff_files and not comparison.left_only and not comparison.right_only
    assert filecmp.cmp(tmp_path / "a/ci/resources.json", tmp_path / "b/ci/resources.json", shallow=False)


def test_the_daemon_model_predicts_the_engines_read_back(stack: harness.Applied, synth: Synth) -> None:
    """`plan.engine_inspect`, which judges the dev and prod stacks without an engine
    (tests/stacks/test_second_up.py), gives the provider's Read the same state as the real
    `docker inspect` of every ci container."""
    api = harness.api_version()
    mismatches = {}
    for res in synth.of_type(harness.CONTAINER):
        inputs = harness.STATE.entries[res["name"]].inputs
        predicted = harness.predicted_state(res, api_version=api)
        if res["inputs"]["image"] in {harness.mock_repo_digest(i) for i in synth.of_type(harness.IMAGE)}:
            predicted["image"] = inputs["image"]  # the built image's id, which only the engine knows
        # What the program sets decides a plan (the rest is Optional+Computed): the model and the
        # engine must agree on all of it.
        found = plan.diff(
            harness.CONTAINER,
            {k: predicted.get(k) for k in res["inputs"]},
            {k: inputs.get(k) for k in res["inputs"]},
        )
        if found:
            mismatches[res["name"]] = [(c.path, c.old, c.new) for c in found]
    assert mismatches == {}


# 6b. Edits, judged by the providers' rules ----------------------------------------------------------

MIB = 1024 * 1024


def edited(synth: Synth, edits: dict[str, dict[str, Any]]) -> Synth:
    out = copy.deepcopy(synth)
    for name, inputs in edits.items():
        out.named(name)["inputs"].update(copy.deepcopy(inputs))
    return out


def test_each_edit_class_gets_the_plan_the_real_providers_would_give(stack: harness.Applied, synth: Synth) -> None:
    """One edit per class, each applied on the engine: in place through ContainerUpdate (same id),
    replacing (and the command its id triggers deleted first, created after), recorded only (the
    container keeps the old healthcheck: the edit never arrives) against the same edit made
    replacing by the program's recreate label, and a changed delete (an update: create re-runs)."""
    ids = dict(stack.containers)
    exporter, mtail, prom = "monitoring-nginx-exporter", "gateway-mtail", "monitoring-prometheus"

    update = harness.apply(edited(synth, {exporter: {"memory": 96, "memorySwap": 96}}))
    assert update.plan.changed() == {exporter: "update"}
    assert {c.path: c.change for c in update.plan.steps[exporter].changes} == {
        "memory": "update",
        "memorySwap": "update",
    }
    assert update.containers == ids and update.commands_run == []
    assert harness.inspect(ids[exporter])["HostConfig"]["Memory"] == 96 * MIB

    replace = harness.apply(edited(synth, {mtail: {"cpus": "1.0"}}))
    stack.containers.update(replace.containers)
    assert replace.plan.changed() == {exporter: "update", mtail: "replace", "gateway-reload": "replace"}
    assert replace.plan.steps["gateway-reload"].deleted_before == [mtail]
    assert replace.containers[mtail] != ids[mtail] and replace.containers["gateway-nginx"] == ids["gateway-nginx"]
    assert replace.commands_run == ["gateway-reload create"]

    health = synth.named(prom)["inputs"]["healthcheck"]
    retries = {**health, "retries": health["retries"] + 1}
    dropped = harness.apply(edited(synth, {prom: {"healthcheck": retries}}))
    stack.containers.update(dropped.containers)
    assert dropped.plan.changed() == {mtail: "replace", "gateway-reload": "replace", prom: "record"}
    assert dropped.containers[prom] == ids[prom]
    assert harness.inspect(ids[prom])["Config"]["Healthcheck"]["Retries"] == health["retries"]

    labels = [dict(item) for item in synth.named(prom)["inputs"]["labels"]]
    digest = hardening.recreate_digest(
        hardening.Health(
            health["tests"],
            provider_rules.parse_go_duration(health["interval"]) // hardening.SECOND,
            provider_rules.parse_go_duration(health["timeout"]) // hardening.SECOND,
            health["retries"] + 1,
            provider_rules.parse_go_duration(health["startPeriod"]) // hardening.SECOND,
        ),
        None,
    )
    for item in labels:
        if item["label"] == hardening.RECREATE_LABEL:
            assert item["value"] != digest
            item["value"] = digest
    made = harness.apply(edited(synth, {prom: {"healthcheck": retries, "labels": labels}}))
    stack.containers.update(made.containers)
    assert made.plan.changed() == {prom: "replace"}
    assert {c.path for c in made.plan.steps[prom].changes} == {"labels[].value"}
    assert harness.inspect(made.containers[prom])["Config"]["Healthcheck"]["Retries"] == health["retries"] + 1

    member = "chat-local-0-member"
    drain = str(synth.named(member)["inputs"]["delete"])
    longer = drain.replace(" 120", " 121")
    assert longer != drain, drain
    redeleted = harness.apply(edited(synth, {member: {"delete": longer}}))
    stack.containers.update(redeleted.containers)
    assert redeleted.plan.changed() == {prom: "replace", member: "update"}
    assert redeleted.commands_run == [f"{member} create"]
    assert redeleted.containers["chat-local-0"] == ids["chat-local-0"]

    back = harness.apply(synth)
    stack.containers.update(back.containers)
    assert back.plan.changed() == {member: "update"}
    assert harness.apply(synth).plan.changed() == {}
    assert chat()[0] == 200


@dataclass
class Stream:
    started: threading.Event = dataclasses.field(default_factory=threading.Event)
    chunks: int = 0
    done: bool = False


def stream_chat(progress: Stream, max_tokens: int = 320) -> Stream:
    """One streamed completion through the gateway, its progress in `progress` as it goes."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count from one to one hundred."}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "min_tokens": max_tokens,
        "stream": True,
    }
    request = urllib.request.Request(
        f"{GATEWAY}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT_KEY}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            for line in response:
                if line.startswith(b"data: [DONE]"):
                    progress.done = True
                elif line.startswith(b"data: "):
                    progress.chunks += 1
                    progress.started.set()
    except (OSError, http.client.HTTPException):
        pass
    return progress


def test_a_replaced_then_destroyed_gateway_finishes_every_started_stream(stack: harness.Applied, synth: Synth) -> None:
    """nginx's SIGQUIT keeps streams open up to worker_shutdown_timeout, and the provider's delete
    waits destroyGraceSeconds for it: every stream that had started when the gateway was replaced,
    and again when it was destroyed, completes. A replaced gateway re-runs only its readmit and
    its reload, no worker's membership."""
    gateway = synth.named("gateway-nginx")["inputs"]
    # The daemon's stop timeout and the provider's delete grace: both past nginx's shutdown bound.
    assert gateway["destroyGraceSeconds"] == gateway["stopTimeout"] > 0
    cpus = str(float(gateway["cpus"]) + 1)

    def under_streams(action: Any, count: int = 4) -> list[tuple[int, bool]]:
        """(chunks, completed) of each stream that had started and not ended when `action` began."""
        streams = [Stream() for _ in range(count)]
        with ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(stream_chat, st) for st in streams]
            # Act once at least two are streaming (at most 120 s); one that has not started by then
            # is not judged: it may meet a gateway that is already gone.
            deadline = time.monotonic() + 120
            while sum(st.started.is_set() and not st.done for st in streams) < 2:
                assert time.monotonic() < deadline, "fewer than two streams were ever in flight at once"
                time.sleep(0.05)
            in_flight = [st for st in streams if st.started.is_set() and not st.done]
            action()
            for future in futures:
                future.result(timeout=600)
            return [(st.chunks, st.done) for st in in_flight]

    replaced: list[harness.Applied] = []
    started = time.monotonic()
    streams = under_streams(lambda: replaced.append(harness.apply(edited(synth, {"gateway-nginx": {"cpus": cpus}}))))
    print(f"gateway replaced under {len(streams)} streams: {time.monotonic() - started:.1f} s")
    applied = replaced[0]
    stack.containers.update(applied.containers)
    print(f"replace: {sum(done for _, done in streams)}/{len(streams)} started streams completed, chunks {streams}")
    assert applied.plan.changed() == {
        "gateway-nginx": "replace",
        "gateway-readmit": "replace",
        "gateway-reload": "replace",
    }
    assert sorted(applied.commands_run) == ["gateway-readmit create", "gateway-reload create"]
    assert all(done and chunks >= 320 for chunks, done in streams), streams
    assert wait("the new gateway serves", lambda: chat()[0] == 200, 60)

    started = time.monotonic()
    streams = under_streams(lambda: harness.destroy(["gateway-nginx"]))
    print(f"gateway destroyed under {len(streams)} streams: {time.monotonic() - started:.1f} s")
    print(f"destroy: {sum(done for _, done in streams)}/{len(streams)} started streams completed, chunks {streams}")
    assert all(done and chunks >= 320 for chunks, done in streams), streams
    back = harness.apply(synth)
    stack.containers.update(back.containers)
    assert back.plan.changed() == {"gateway-nginx": "create", "gateway-readmit": "replace", "gateway-reload": "replace"}
    assert wait("the gateway serves again", lambda: chat()[0] == 200, 60)
    assert harness.apply(synth).plan.changed() == {}

    # The control: the provider's delete without destroyGraceSeconds (a stop with t=0) cuts them.
    entry = harness.STATE.entries["gateway-nginx"]
    streams = under_streams(lambda: harness.delete_container(entry.id, 0))
    print(f"destroy without grace: {sum(done for _, done in streams)}/{len(streams)} started streams completed")
    assert not any(done for _, done in streams), streams
    del harness.STATE.entries["gateway-nginx"]
    again = harness.apply(synth)
    stack.containers.update(again.containers)
    assert wait("the gateway serves again", lambda: chat()[0] == 200, 60)


# 7. Timing -----------------------------------------------------------------------------------------


def test_worker_restart_times_cold_and_warm_compile_cache(stack: harness.Applied) -> None:
    """Time to healthy after `docker restart` of one worker, alone: first with its compile-cache
    directory emptied (cold), then as it is (warm). The ci workers run `--enforce-eager`, so vLLM
    compiles nothing and the two should be close; on GPUs, with torch.compile and CUDA graphs, the
    warm cache is where a restart saves its time."""
    worker = "chat-local-2"
    cache = next(m["Source"] for m in stack.inspect(worker)["Mounts"] if m["Destination"] == "/root/.cache/vllm")
    times = {}
    for kind in ("cold", "warm"):
        if kind == "cold":
            docker("stop", stack.names[worker])
            for entry in Path(cache).iterdir():
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        started = time.monotonic()
        docker("restart", stack.names[worker])
        wait(f"{worker} healthy after a {kind} restart", lambda: health(stack.containers[worker]) == "healthy", 300, 1)
        times[kind] = round(time.monotonic() - started, 1)
    assert any(Path(cache).iterdir()), f"{cache}: vLLM wrote nothing to its cache directory"
    print(f"{worker}: first start (three workers at once) {stack.seconds[worker]:.1f} s; restarts alone {times} s")


# 7b. Rolling update (before the teardown: it leaves the stack on another revision) ----------------


@pytest.mark.timeout(1500)
def test_a_model_revision_change_rolls_through_the_workers_under_load(
    stack: harness.Applied, synth: Synth, tmp_path: Path
) -> None:
    """A new `model.revision` replaces the three workers one at a time, in the order the
    synthesized dependency chain gives: each is drained from the gateway (its member command's
    delete), replaced, health-gated and admitted again before the next goes. Steady load through
    the gateway meanwhile sees no failed request, and the gateway never has fewer than two
    members (sampled every second)."""
    old_revision = next(w for w in synth.of_type(harness.CONTAINER) if w["name"] == WORKERS[0])["inputs"]["command"]
    old_revision = old_revision[old_revision.index("--revision") + 1]
    new_revision = old_revision[:-3] + "136"
    changed = tmp_path / "Pulumi.ci.yaml"
    changed.write_text((ROOT / "Pulumi.ci.yaml").read_text().replace(old_revision, new_revision))
    new = synth_stack("ci", stack_file=changed, secrets=SECRETS, reveal=True)
    harness.seed_model_cache(new)
    # The chain: each worker waits (through member commands) on the ones before it.
    chain = sorted(WORKERS, key=lambda w: sum(new.depends_on(w, other) for other in WORKERS))
    assert [sum(new.depends_on(w, o) for o in WORKERS) for w in chain] == [0, 1, 2]

    stop = threading.Event()
    results: list[tuple[float, int]] = []
    samples: list[tuple[float, int]] = []
    members_dir = "/etc/nginx/inference-stack/members/chat"

    def load() -> None:
        # Steady but light: a request every 3 s. All three CPU workers bind their OpenMP threads
        # to core 0 of this 2-core machine, and vLLM's workers busy-poll their shared-memory
        # queue for 1 s after every step (SpinCondition.busy_loop_s in shm_broadcast.py): with a
        # request every second or faster, the serving workers spin on core 0 nonstop and a new
        # worker took over 5 minutes to start instead of 30 s. Bounded: 500 requests, 1200 s.
        deadline = time.monotonic() + 1200
        for i in range(500):
            if stop.wait(3.0) or time.monotonic() > deadline:
                return
            try:
                code, _ = chat(f"Say {i}.", max_tokens=4)
            except OSError:
                code = 0
            results.append((time.monotonic(), code))

    def sample() -> None:
        while not stop.is_set():
            listed = docker("exec", stack.names["gateway-nginx"], "ls", members_dir, check=False)
            samples.append((time.monotonic(), len(listed.stdout.split()) if listed.returncode == 0 else -1))
            stop.wait(1.0)

    threads = [threading.Thread(target=load), threading.Thread(target=sample)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    try:
        time.sleep(3)
        applied = harness.apply(new)
        # The module's teardown removes what `stack` lists: the replacements now.
        stack.containers.update(applied.containers)
        time.sleep(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    took = time.monotonic() - started
    assert [applied.actions[w] for w in chain] == ["replaced"] * 3
    assert [applied.actions[f"{w}-member"] for w in chain] == ["ran"] * 3
    created = [created_at(harness.inspect(applied.containers[w])) for w in chain]
    gaps = [b - a for a, b in itertools.pairwise(created)]
    # Each next worker was created only after the one before was healthy and admitted (> 10 s).
    assert all(gap > 10 for gap in gaps), f"replaced out of chain order: {list(zip(chain, created, strict=True))}"
    for w in chain:
        assert new_revision in harness.inspect(applied.containers[w])["Config"]["Cmd"]
    failed = [code for _, code in results if code != 200]
    lowest = min(count for _, count in samples)
    print(
        f"gaps between replacements: {[round(g) for g in gaps]} s; "
        f"rolling update of {len(chain)} workers: {took:.0f} s; {len(results)} requests, {len(failed)} failed; "
        f"gateway members sampled {len(samples)} times, lowest {lowest}, last {samples[-1][1]}"
    )
    if failed:
        logs = docker("logs", stack.names["gateway-nginx"], check=False).stdout.splitlines()
        print("failed requests in the gateway's log:", *[line for line in logs if '"status":200' not in line][-10:])
    assert len(results) > 20 and failed == []
    assert lowest >= len(WORKERS) - 1 and samples[-1][1] == len(WORKERS)


def ci_stack_file(tmp_path: Path, name: str, canary: dict[str, Any] | None, revision: str = "136") -> Path:
    """Pulumi.ci.yaml after the rolling update (revision ...136), with `canary` on the chat group."""
    data = yaml.safe_load((ROOT / "Pulumi.ci.yaml").read_text())
    group = data["config"]["inference-stack:workers"][0]
    group["model"]["revision"] = group["model"]["revision"][:-3] + revision
    if canary is not None:
        group["canary"] = canary
    path = tmp_path / name / "Pulumi.ci.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data))
    return path


def canary_requests(stack: harness.Applied, n: int) -> tuple[int, int]:
    """(requests the canary worker finished, all 200s) over `n` requests through the gateway."""

    def served() -> float:
        out = docker("exec", stack.names["chat-local-2"], "python3", "-c", METRICS_READER).stdout
        return float(out.strip() or 0)

    before = served()
    ok = sum(chat(f"Count to {i}.", max_tokens=2)[0] == 200 for i in range(n))
    return int(served() - before), ok


# The canary worker's own count of finished requests, read inside its container (no port published).
METRICS_READER = (
    "import re, urllib.request as u\n"
    "t = u.urlopen('http://127.0.0.1:8000/metrics', timeout=10).read().decode()\n"
    "print(sum(float(v) for v in re.findall(r'^vllm:request_success_total\\{[^}]*\\} (\\S+)$', t, re.M)))"
)


def apply_expecting_gate_failure(stack: harness.Applied, synth: Synth) -> harness.GateFailedError:
    """Applies `synth`, which must fail at the canary gate; what it created is torn down with `stack`."""
    try:
        applied = harness.apply(synth)
    except harness.HarnessError as err:
        if err.applied is not None:
            stack.containers.update(err.applied.containers)
        if isinstance(err, harness.GateFailedError):
            return err
        raise
    stack.containers.update(applied.containers)
    raise AssertionError(f"the gate passed: {applied.reports}")


@pytest.mark.timeout(1500)
def test_the_canary_gate_holds_a_wrong_release_back_and_lets_a_correct_one_take_its_share(
    stack: harness.Applied, tmp_path: Path
) -> None:
    """The canary gate, run by the harness as Pulumi runs the command, against a real vLLM canary
    behind the real gateway and with TTFT from the real Prometheus:

    1. A wrong release (revision ...138: the test model whose tokenizer can never write a 7, see
       tests/support/wrong_release.py) on the last worker passes the health probe, but its gate
       asks "What is 3 + 4?" and wants a 7: the gate fails with a report naming the prompt, the
       expected fragment and the answer, and the split never runs: the stable workers keep every
       request. By construction, not by the tiny model's luck: the release cannot write a 7.
    2. The correct release (revision ...137), gated on 2 + 2 alone, passes; the split gives it its 10 %.
    3. Removing the canary rolls the worker back into the stable pool and takes the share away."""
    ttft = {"ttftP95Seconds": 10, "ttftVsStableMax": 50, "requests": 6}
    wrong_revision = "0" * 37 + "138"
    canary = {"revision": wrong_revision, "weightPercent": 10, "gate": {**ttft, "probes": [wrong_release.PROBE]}}
    wrong = synth_stack("ci", stack_file=ci_stack_file(tmp_path, "wrong", canary), secrets=SECRETS, reveal=True)
    release = wrong_release.build(model_path(), model_path().with_name("smollm2-135m-wrong"))
    harness.seed_model_cache(wrong, releases={wrong_revision: release})
    failed = apply_expecting_gate_failure(stack, wrong)
    report = failed.report
    print(f"\nfailing gate report:\n{report}")
    assert f"PASS  prompt: {canary_gate.TWO_PLUS_TWO['prompt']!r}  expected: '4'" in report
    line = next(x for x in report.splitlines() if wrong_release.PROBE["prompt"] in x)
    assert line.startswith("FAIL") and "expected: '7'" in line
    answer = line.split("answer: ", 1)[1]
    assert len(answer) > 2 and "7" not in answer
    assert re.search(r"TTFT P95 over 10m: canary \d+\.\d+ s", report), report
    assert failed.applied is not None and failed.applied.actions.get("chat-canary-split") is None
    weights = docker(
        "exec", stack.names["gateway-nginx"], "ls", "/etc/nginx/inference-stack/weights/smollm2_135m", check=False
    )
    assert weights.stdout.strip() == ""
    to_canary, ok = canary_requests(stack, 12)
    assert (to_canary, ok) == (0, 12)

    canary.update(revision="0" * 37 + "137", gate=ttft)
    right = synth_stack("ci", stack_file=ci_stack_file(tmp_path, "right", canary), secrets=SECRETS, reveal=True)
    harness.seed_model_cache(right)
    applied = harness.apply(right)
    stack.containers.update(applied.containers)
    assert applied.actions["chat-local-2"] == "replaced" and applied.actions["chat-canary-gate"] == "ran"
    assert applied.actions["chat-canary-split"] == "ran"
    print(f"passing gate report ({applied.seconds['chat-canary-gate']} s):\n{applied.reports['chat-canary-gate']}")
    share = docker(
        "exec", stack.names["gateway-nginx"], "cat", "/etc/nginx/inference-stack/weights/smollm2_135m/chat_canary.conf"
    ).stdout
    assert len(share.splitlines()) == 10
    # 10 % of 100: none at all has odds of 0.9^100 (3e-5), over 30 of 2e-9.
    to_canary, ok = canary_requests(stack, 100)
    print(f"canary share: {to_canary} of 100 requests")
    assert ok == 100 and 1 <= to_canary <= 30

    back = synth_stack("ci", stack_file=ci_stack_file(tmp_path, "back", None), secrets=SECRETS, reveal=True)
    applied = harness.apply(back)
    stack.containers.update(applied.containers)
    assert applied.actions["chat-local-2"] == "replaced" and applied.actions["chat-canary-split"] == "deleted"
    pools = docker("exec", stack.names["gateway-nginx"], "ls", "/etc/nginx/inference-stack/members/chat").stdout
    assert len(pools.split()) == len(WORKERS)
    assert (
        docker(
            "exec", stack.names["gateway-nginx"], "ls", "/etc/nginx/inference-stack/members/chat_canary", check=False
        ).stdout.strip()
        == ""
    )


@pytest.mark.timeout(1500)
def test_a_canary_promoted_to_100_and_folded_replaces_its_workers_once(stack: harness.Applied, tmp_path: Path) -> None:
    """10 % -> 100 % -> folded into the group: at 100 % the gate runs again, the canary worker is
    promoted into the stable pool without being replaced, the two others roll onto its revision,
    and folding the release into the group's own `model.revision` then replaces nothing."""
    release = {"revision": "0" * 37 + "137", "gate": {"ttftP95Seconds": 10, "ttftVsStableMax": 50, "requests": 6}}
    steps = {}
    for name, canary, revision in (
        ("ten", {**release, "weightPercent": 10}, "136"),
        ("hundred", {**release, "weightPercent": 100}, "136"),
        ("folded", None, "137"),
    ):
        synth = synth_stack(
            "ci", stack_file=ci_stack_file(tmp_path, name, canary, revision), secrets=SECRETS, reveal=True
        )
        harness.seed_model_cache(synth)
        started = time.monotonic()
        applied = harness.apply(synth)
        stack.containers.update(applied.containers)
        steps[name] = (applied, time.monotonic() - started)
    ten, hundred, folded = (steps[n][0] for n in ("ten", "hundred", "folded"))
    print("apply seconds: " + ", ".join(f"{n} {t:.0f}" for n, (_, t) in steps.items()))
    canary_id = ten.containers["chat-local-2"]
    assert hundred.containers["chat-local-2"] == canary_id and hundred.actions["chat-canary-gate"] == "ran"
    assert hundred.actions["chat-canary-promote"] == "ran"
    assert [hundred.actions[w] for w in WORKERS[:2]] == ["replaced", "replaced"]
    for w in WORKERS:
        assert "0" * 37 + "137" in harness.inspect(hundred.containers[w])["Config"]["Cmd"]
    # Folded: every worker already runs exactly this. Nothing is replaced, the gate and promotion go.
    assert [folded.actions[w] for w in WORKERS] == ["kept"] * 3
    assert folded.containers["chat-local-2"] == canary_id
    assert folded.actions["chat-canary-gate"] == "deleted" and folded.actions["chat-canary-promote"] == "deleted"
    members = docker("exec", stack.names["gateway-nginx"], "ls", "/etc/nginx/inference-stack/members/chat").stdout
    assert len(members.split()) == len(WORKERS)
    assert chat()[0] == 200


# Cleanup ---------------------------------------------------------------------------------------------


def test_teardown_removes_containers_and_networks_but_keeps_named_volumes(stack: harness.Applied) -> None:
    """As a `pulumi destroy` of the containers would: Redis's AOF, Prometheus's TSDB and the model
    cache stay (the stack marks them retain_on_delete). Runs last: the module's stack is gone after."""
    volumes = set(stack.volumes.values())
    removed = harness.teardown(graceful=True, only=stack)
    assert set(stack.names.values()) <= set(removed)
    for container in stack.containers.values():
        assert harness.get_or_none(f"/containers/{container}/json") is None
    existing = {v["Name"] for v in harness.api("GET", "/volumes")["Volumes"] or []}
    assert volumes and volumes <= existing, volumes - existing


def test_the_gateway_needs_every_capability_it_adds_back(stack: harness.Applied, synth: Synth, tmp_path: Path) -> None:
    """CIS 5.3 with nothing to spare: nginx serves with exactly the gateway's capability set, and
    fails without any one of them (CHOWN for its temp dirs, SETGID and SETUID for its workers).
    A minimal config with the gateway's own pid and temp paths, on the gateway's image."""
    docker = require_engine()
    inputs = synth.named("gateway-nginx")["inputs"]
    adds = inputs["capabilities"]["adds"]
    assert inputs["capabilities"]["drops"] == ["ALL"] and adds
    rendered = next(u["content"] for u in inputs["uploads"] if u["file"] == "/etc/nginx/nginx.conf")
    kept = [line.strip() for line in rendered.splitlines() if line.strip().startswith(("pid ", "error_log "))]
    temp = [line.strip() for line in rendered.splitlines() if "_temp_path " in line]
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "\n".join(kept)
        + "\nevents {}\nhttp {\n"
        + "\n".join(temp)
        + "\naccess_log off;\nserver { listen 8080; location / { return 200 ok; } }\n}\n"
    )
    conf.chmod(0o644)

    def logs(name: str) -> str:
        return subprocess.run([docker, "logs", name], capture_output=True, text=True).stderr

    def serves(caps: list[str]) -> tuple[bool, str]:
        name = f"inference-stack-captest-{len(caps)}"
        subprocess.run([docker, "rm", "-f", name], capture_output=True)
        run = [docker, "run", "-d", "--name", name, "--label", "inference-stack.test=capabilities", "--cap-drop", "ALL"]
        run += [arg for cap in caps for arg in ("--cap-add", cap)]
        run += ["--security-opt", "no-new-privileges:true", "--tmpfs", "/tmp", "-v", f"{conf}:/etc/nginx/nginx.conf:ro"]
        subprocess.run([*run, inputs["image"]], check=True, capture_output=True)
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                # One try of 2 s: nginx with a master but no worker accepts and never answers.
                got = subprocess.run(
                    [docker, "exec", name, "wget", "-q", "-t", "1", "-T", "2", "-O", "-", "http://127.0.0.1:8080/"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                if got.stdout == "ok":
                    return True, ""
                if "fatal code" in (log := logs(name)) or "[emerg]" in log:
                    return False, log
                time.sleep(0.2)
            return False, logs(name)
        finally:
            subprocess.run([docker, "rm", "-f", name], capture_output=True)

    assert serves(adds) == (True, "")
    for cap in adds:
        ok, log = serves([c for c in adds if c != cap])
        print(f"without {cap}: {log.strip().splitlines()[-1] if log.strip() else 'no log'}")
        assert not ok and "Operation not permitted" in log, (cap, log)
