"""The benchmark's generated fleets stay valid stacks (the timing itself lives in benchmarks/)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from stacks.synth import ROOT


def test_benchmark_fleet_synthesizes() -> None:
    spec = importlib.util.spec_from_file_location("bench_synth", ROOT / "benchmarks/synth.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _, resources = bench.time_once(2)
    assert resources > 2 * bench.GPUS_PER_HOST
    assert Path(ROOT / "docs/performance.md").read_text().count("benchmarks/synth.py") >= 1
