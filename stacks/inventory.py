"""Parses what `scripts/verify.sh` prints into a GPU inventory.

verify.sh prints `nvidia-smi --query-gpu=index,uuid,name,memory.total,driver_version,compute_cap,
mig.mode.current --format=csv,noheader,nounits` from inside a container, then `uvm=ok` once the
CUDA device check passed. Anything else is an error: a half-printed inventory must never pass
for a host with fewer GPUs.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

COLUMNS = ("index", "uuid", "name", "memory.total", "driver_version", "compute_cap", "mig.mode.current")
UVM_OK = "uvm=ok"


class InventoryError(ValueError):
    pass


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_mib: int
    driver_version: str
    compute_capability: str
    mig_mode: str
    """`Enabled`, `Disabled`, or `N/A` on GPUs without MIG."""

    def as_output(self) -> dict[str, Any]:
        return asdict(self)


def parse_inventory(text: str, host: str = "host") -> list[Gpu]:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines or lines[-1] != UVM_OK:
        raise InventoryError(
            f"host `{host}`: the GPU verification did not finish with `{UVM_OK}`: the CUDA check inside the "
            "container failed or its output was cut short"
        )
    gpus = []
    for number, line in enumerate(lines[:-1], start=1):
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(COLUMNS):
            raise InventoryError(
                f"host `{host}`: inventory line {number} has {len(fields)} fields, expected {len(COLUMNS)} "
                f"({', '.join(COLUMNS)}): {line!r}"
            )
        index, uuid, name, memory, driver, compute, mig = fields
        problems = []
        if not index.isdigit():
            problems.append("index")
        if not re.fullmatch(r"GPU-[0-9a-fA-F-]{36}", uuid):
            problems.append("uuid")
        if not memory.isdigit():
            problems.append("memory.total")
        if not re.fullmatch(r"\d+\.\d+(\.\d+)?", driver):
            problems.append("driver_version")
        if not re.fullmatch(r"\d+\.\d+", compute):
            problems.append("compute_cap")
        if mig not in ("Enabled", "Disabled", "[N/A]", "N/A"):
            problems.append("mig.mode.current")
        if problems:
            raise InventoryError(f"host `{host}`: inventory line {number} has a bad {', '.join(problems)}: {line!r}")
        gpus.append(Gpu(int(index), uuid, name, int(memory), driver, compute, mig.strip("[]")))
    if not gpus:
        raise InventoryError(f"host `{host}`: the verification container saw no GPU")
    if sorted(g.index for g in gpus) != list(range(len(gpus))):
        raise InventoryError(f"host `{host}`: GPU indexes {[g.index for g in gpus]} are not 0..{len(gpus) - 1}")
    return gpus
