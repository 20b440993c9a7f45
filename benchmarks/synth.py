"""Times the offline synth (the program run behind `make render`) for fleets of 8-GPU hosts.

    .venv/bin/python benchmarks/synth.py [--repeat 3] [--hosts 1 4 16] [--results FILE]

The fleets are generated here, not shipped as stacks. Target: 128 workers in under 5 s,
growing linearly with the worker count. `make bench` writes benchmarks/results/synth.json, and
benchmarks/report.py turns it into the table in docs/performance.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report, results
from composition.platform import main as program
from tools.fixtures import VALID_MODEL, as_pulumi_config
from tools.synth import Synth, run

GPUS_PER_HOST = 8
HOST_TYPE = "inference-stack:hosts:GpuHost"


def fleet(hosts: int) -> dict[str, Any]:
    return {
        "hosts": [
            {
                "name": f"gpu-{i:02d}",
                "ssh": {"user": "deploy", "address": f"gpu-{i:02d}.internal"},
                "privateAddress": f"10.20.{i // 250}.{i % 250 + 1}",
                "gpus": {"count": GPUS_PER_HOST},
            }
            for i in range(hosts)
        ],
        "workers": [
            {"name": "chat", "image": "vllm/vllm-openai:v0.32.0", "model": {**VALID_MODEL, "weights": "prefetch"}}
        ],
    }


@dataclass
class Timing:
    seconds: float
    cpu_seconds: float
    """This process's CPU time: what the run costs, whatever else the machine runs."""
    others: float
    """CPU cores the rest of the machine used meanwhile."""


def time_once(hosts: int) -> tuple[Timing, Synth]:
    busy, cpu, start = results.busy_seconds(), time.process_time(), time.perf_counter()
    synth = run("bench", as_pulumi_config(fleet(hosts)), [], program)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    others = max(0.0, results.busy_seconds() - busy - cpu) / elapsed
    workers = len([c for c in synth.of_type("docker:index/container:Container") if c["parent"] == "chat"])
    assert workers == hosts * GPUS_PER_HOST, workers
    return Timing(elapsed, cpu, others), synth


def steps(synth: Synth, host: str) -> list[str]:
    """The provisioning steps a host carries (a command each), in the order they run."""
    names = [r["name"] for r in synth.resources if r.get("parent") == host and r["type"].startswith("command:")]
    # Each step waits for the one before it (GpuHost._step): more ancestors, later in the chain.
    chain = sorted(names, key=lambda name: sum(synth.depends_on(name, other) for other in names))
    return [name.removeprefix(f"{host}-") for name in chain]


def measure(hosts: int, repeat: int) -> dict[str, Any]:
    timings, synth = [], Synth()
    for _ in range(repeat):
        timing, synth = time_once(hosts)
        timings.append(timing)
    # The first two hosts: the gateway's and a plain one (which adds the firewall step).
    named = [r["name"] for r in synth.of_type(HOST_TYPE)][:2]
    return {
        "hosts": hosts,
        "workers": hosts * GPUS_PER_HOST,
        "resources": len(synth.resources),
        "seconds": [round(t.seconds, 4) for t in timings],
        "cpu_seconds": [round(t.cpu_seconds, 4) for t in timings],
        "others_cores": [round(t.others, 3) for t in timings],
        "by_type": dict(sorted(Counter(r["type"] for r in synth.resources).items())),
        "steps": {host: steps(synth, host) for host in named},
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--results", type=Path, help="write the results file (benchmarks/report.py renders it)")
    args = parser.parse_args()
    time_once(1)  # untimed: imports and the SDK's first-run set-up are not the synth's cost
    rows = []
    for hosts in args.hosts:
        rows.append(measure(hosts, args.repeat))
        print(report.synth_row(rows[-1]), file=sys.stderr, flush=True)
    data = results.record(
        "synth",
        machine=results.machine(pulumi=importlib.metadata.version("pulumi")),
        repeat=args.repeat,
        rows=rows,
    )
    if args.results:
        results.write(args.results, data)
    print(report.synth_section(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
