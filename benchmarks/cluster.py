"""Times the offline synth of `target: kubernetes` stacks on clusters of 8-GPU nodes.

    .venv/bin/python benchmarks/cluster.py [--repeat 3] [--gpus 16 64 256] [--results FILE]

Each cluster is generated here: one group of 8 two-GPU replicas (autoscaled to 8) per 16 GPUs,
each with a canary, so every kind the fleet renders is there (Deployments, disruption budgets,
ScaledObjects, routers, policies). Target: 64 GPUs in under 5 s. `make bench` writes
benchmarks/results/cluster.json; benchmarks/report.py renders it into docs/performance.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report, results
from composition.platform import main as program
from tools.fixtures import VALID_MODEL, as_pulumi_config
from tools.synth import run

GPUS_PER_NODE = 8
GPUS_PER_GROUP = 16
TP = 2


def cluster(gpus: int) -> dict[str, Any]:
    groups = max(1, gpus // GPUS_PER_GROUP)
    replicas = GPUS_PER_GROUP // TP
    return {
        "target": "kubernetes",
        "kubernetes": {
            "storageClass": "local-nvme",
            "routerImage": "registry.example.com/inference-stack/vllm-router:0.1.17",
            "nodePools": [
                {
                    "name": "h100",
                    "nodes": gpus // GPUS_PER_NODE + 1,
                    "gpusPerNode": GPUS_PER_NODE,
                    "cpus": 96,
                    "memoryMb": 1048576,
                }
            ],
        },
        "gateway": {"rateLimit": {"requestsPerSecond": 100, "burst": 200}},
        "workers": [
            {
                "name": f"chat-{g:02d}",
                "image": "vllm/vllm-openai:v0.32.0",
                "model": {
                    **VALID_MODEL,
                    "servedName": f"chat-{g:02d}",
                    "tensorParallelSize": TP,
                    "weights": "prefetch",
                },
                "cluster": {"autoscale": {"minReplicas": replicas - 1, "maxReplicas": replicas - 1}},
                "canary": {"extraArgs": ["--enable-chunked-prefill"], "weightPercent": 10, "workers": 1},
            }
            for g in range(groups)
        ],
    }


def measure(gpus: int, repeat: int) -> dict[str, Any]:
    seconds, cpu_seconds, synth = [], [], None
    for _ in range(repeat):
        cpu, start = time.process_time(), time.perf_counter()
        synth = run("bench", as_pulumi_config(cluster(gpus)), [], program)
        seconds.append(round(time.perf_counter() - start, 4))
        cpu_seconds.append(round(time.process_time() - cpu, 4))
    assert synth is not None
    deployments = [
        r
        for r in synth.of_type("kubernetes:apps/v1:Deployment")
        if r["name"].split("-deployment-")[0].startswith("chat-")
    ]
    return {
        "gpus": gpus,
        "groups": len(cluster(gpus)["workers"]),
        "worker_deployments": len(deployments),
        "resources": len(synth.resources),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "by_type": dict(sorted(Counter(r["type"] for r in synth.resources).items())),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gpus", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--results", type=Path, help="write the results file (benchmarks/report.py renders it)")
    args = parser.parse_args()
    run("bench", as_pulumi_config(cluster(16)), [], program)  # untimed: imports and the SDK's set-up
    rows = []
    for gpus in args.gpus:
        rows.append(measure(gpus, args.repeat))
        print(report.cluster_row(rows[-1]), file=sys.stderr, flush=True)
    data = results.record(
        "cluster",
        machine=results.machine(pulumi=importlib.metadata.version("pulumi")),
        repeat=args.repeat,
        rows=rows,
    )
    if args.results:
        results.write(args.results, data)
    print(report.cluster_section(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
