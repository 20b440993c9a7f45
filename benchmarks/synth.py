"""Times the offline synth (the program run behind `make render`) for fleets of 8-GPU hosts.

    .venv/bin/python benchmarks/synth.py [--repeat 3]

The fleets are generated here, not shipped as stacks. Target: 128 workers in under 5 s,
growing linearly with the worker count. Results go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stacks.platform import main as program
from stacks.synth import run
from tests.helpers import VALID_MODEL, as_pulumi_config

GPUS_PER_HOST = 8


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


def time_once(hosts: int) -> tuple[float, int]:
    start = time.perf_counter()
    synth = run("bench", as_pulumi_config(fleet(hosts)), [], program)
    elapsed = time.perf_counter() - start
    workers = len([c for c in synth.of_type("docker:index/container:Container") if c["parent"] == "chat"])
    assert workers == hosts * GPUS_PER_HOST, workers
    return elapsed, len(synth.resources)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}, repeat {args.repeat}")
    print("| hosts | workers | resources | median s | min s | ms per worker |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for hosts in args.hosts:
        times, resources = [], 0
        for _ in range(args.repeat):
            elapsed, resources = time_once(hosts)
            times.append(elapsed)
        workers = hosts * GPUS_PER_HOST
        median = statistics.median(times)
        print(
            f"| {hosts} | {workers} | {resources} | {median:.2f} | {min(times):.2f} | {1000 * median / workers:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
