"""What a benchmark records next to its numbers: the exact command, the commit, the machine, the
date. benchmarks/report.py turns a results file into its docs/performance.md section."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks/results"
# A benchmark's own outputs: writing the first benchmark's results must not make the second one
# look measured on uncommitted code.
OUTPUTS = ("benchmarks/results", "docs/performance.md")


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def commit() -> dict[str, Any]:
    """HEAD, and the paths that differ from it (uncommitted or untracked) when measured."""
    excludes = [f":(exclude){path}" for path in OUTPUTS]
    status = git("status", "--porcelain", "--", ".", *excludes)
    return {"sha": git("rev-parse", "HEAD").strip(), "dirty": sorted(line[3:] for line in status.splitlines())}


def command() -> str:
    """The command line as typed from the repository root."""
    python = Path(sys.executable)
    shown = python.relative_to(ROOT) if python.is_relative_to(ROOT) else python
    script = Path(sys.argv[0]).resolve()
    argv = [str(shown), str(script.relative_to(ROOT) if script.is_relative_to(ROOT) else script), *sys.argv[1:]]
    return shlex.join(argv)


def _field(path: str, key: str, default: str, sep: str = ":") -> str:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return default
    for line in lines:
        name, _, value = line.partition(sep)
        if name.strip() == key:
            return value.strip().strip('"')
    return default


def machine(**tools: str) -> dict[str, Any]:
    """This machine as the results file records it; `tools` are the versions of what was measured."""
    mem_kb = int(_field("/proc/meminfo", "MemTotal", "0 kB").split()[0])
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _field("/proc/cpuinfo", "model name", platform.machine()),
        "arch": platform.machine(),
        "ram_gib": round(mem_kb / 2**20, 1),
        "os": _field("/etc/os-release", "PRETTY_NAME", platform.system(), sep="="),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **tools,
    }


def record(benchmark: str, **data: Any) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "command": command(),
        "commit": commit(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        **data,
    }


def busy_jiffies() -> int:
    """Clock ticks the whole machine has spent (user, nice, system) since boot, every core summed."""
    user, nice, system = (int(v) for v in Path("/proc/stat").read_text().split(maxsplit=4)[1:4])
    return user + nice + system


def busy_seconds() -> float:
    return busy_jiffies() / os.sysconf("SC_CLK_TCK")


def write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
