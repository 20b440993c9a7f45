"""Every script in benchmarks/ runs, at tiny sizes, as `make bench` runs it at full size; and the
tables in docs/performance.md are what the committed results files say (the timing itself lives
in benchmarks/, never in an assertion here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report, results
from tests.support.nginx import require_nginx
from tests.support.tools import require_tool
from tools.synth import ROOT

DOC = ROOT / "docs/performance.md"
LITELLM = ROOT / ".cache/bench-venv/bin/litellm"
VLLM = ROOT / ".cache/test-model/venv/bin/vllm"
ROUTER = ROOT / ".cache/router-venv/bin/vllm-router"


def require_installed(path: Path, target: str) -> None:
    """Skip without what a make target installs; under CI=true that is a failure."""
    if path.exists():
        return
    message = f"{path} is missing: `make {target}` (a prerequisite of `make test`) installs it"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def bench(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, f"benchmarks/{script}", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_every_benchmark_script_has_a_smoke_run_here() -> None:
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py")} - {"__init__.py", "report.py", "results.py"}
    assert scripts == {"synth.py", "gateway.py", "routing.py", "cluster.py"}, (
        "give the new benchmark a smoke run in this file"
    )


def test_synth_benchmark_runs_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "synth.json"
    done = bench("synth.py", "--hosts", "1", "2", "--repeat", "1", "--results", str(out), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    data = results.load(out)
    assert [(r["hosts"], r["workers"], len(r["seconds"])) for r in data["rows"]] == [(1, 8, 1), (2, 16, 1)]
    assert data["commit"]["sha"] == results.git("rev-parse", "HEAD").strip()
    assert report.synth_section(data) in done.stdout


def test_cluster_benchmark_runs_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    done = bench("cluster.py", "--gpus", "16", "64", "--repeat", "1", "--results", str(out), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    data = results.load(out)
    assert [(r["gpus"], r["groups"], r["worker_deployments"]) for r in data["rows"]] == [(16, 1, 2), (64, 4, 8)]
    assert report.cluster_section(data) in done.stdout


def test_gateway_benchmark_runs_all_three_paths(tmp_path: Path) -> None:
    """Direct, the gateway (its members admitted by members.sh, as a deploy does) and LiteLLM, each
    answering every request in full: a 503, a wrong token or a missing path fails the run."""
    require_nginx()
    for tool in ("nsenter", "ip", "dpkg-query"):
        require_tool(tool)
    require_installed(LITELLM, "bench-venv")
    out = tmp_path / "gateway.json"
    # A warm-up of 1 s, as at full size: LiteLLM's first request in each of its workers can take
    # most of a second on a busy machine, and a cell needs two requests sent after the warm-up.
    args = ["--streams", "1", "2", "--repeat", "1", "--warmup", "1", "--duration", "0.5", "--retries", "0"]
    done = bench("gateway.py", *args, "--litellm", str(LITELLM), "--results", str(out), timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    data = results.load(out)
    cells = data["runs"][0]
    assert sorted((c["path"], c["streams"]) for c in cells) == sorted(
        (path, streams) for path in ("direct", "gateway", "litellm") for streams in (1, 2)
    )
    assert all(c["errors"] == 0 and c["n"] >= 2 for c in cells), cells
    assert data["machine"]["litellm"] != "not run"
    assert report.gateway_section(data) in done.stdout


def test_routing_benchmark_runs_every_path_on_real_workers(tmp_path: Path) -> None:
    """Three real vLLM CPU workers, the four paths (three nginx balance modes and nginx with the
    real router) and the router-hop measurement, at a tiny size: every request answered, every
    path reaching the workers, vLLM's own prefix-cache counters read for each."""
    require_nginx()
    require_tool("nsenter")
    require_installed(VLLM, "test-model")
    require_installed(ROUTER, "router-venv")
    out = tmp_path / "routing.json"
    args = ["--conversations", "2", "--turns", "2", "--words", "120", "--concurrency", "1", "2"]
    done = bench(
        "routing.py", *args, "--hop-requests", "4", "--budget-seconds", "400", "--results", str(out), timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data = results.load(out)
    cells = data["cells"]
    assert sorted((c["path"], c["concurrency"]) for c in cells) == sorted(
        (path, streams) for path in ("least_conn", "round_robin", "session", "cache_aware") for streams in (1, 2)
    )
    assert all(c["requests"] == 4 and c["errors"] == 0 for c in cells), cells
    # Each cell's prompts reached the workers and were counted by vLLM itself.
    assert all(sum(c["worker_queried_tokens"]) >= 4 * 100 for c in cells), cells
    assert data["hop"]["pairs"] == 4 and data["hop"]["errors"] == 0
    assert report.routing_section(data) in done.stdout


def test_performance_doc_shows_the_committed_results() -> None:
    text = DOC.read_text()
    assert report.splice(text) == text, "run `make bench`, or benchmarks/report.py --write docs/performance.md"


def test_a_stale_table_fails_the_check(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    start, _ = report.markers("synth")
    text = report.splice(DOC.read_text())
    doc.write_text(text.replace(start, f"{start}\n| 1 | 8 | 21 | 0.06 | 0.06 | 8.0 |", 1))
    assert report.main(["--check", str(doc)]) == 1
    assert report.main(["--write", str(doc)]) == 0
    assert doc.read_text() == text
    assert report.main(["--check", str(doc)]) == 0
