"""The GPU inventory parser, on real nvidia-smi output captured on an H100 host, and on the ways
that output goes wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacks.inventory import InventoryError, parse_inventory

FIXTURES = Path(__file__).parents[1] / "fixtures/nvidia-smi"


def h100_line() -> str:
    # The capture has no mig column; verify.sh adds `mig.mode.current`, which query-gpu.csv from
    # the same host shows as Disabled.
    return (FIXTURES / "query-gpu-noheader.csv").read_text().strip() + ", Disabled"


def test_real_h100_output_parses() -> None:
    (gpu,) = parse_inventory(f"{h100_line()}\nuvm=ok\n", "gpu-a")
    assert gpu.index == 0
    assert gpu.uuid == "GPU-685c499b-7dab-c713-b625-e3192452190b"
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.memory_mib == 81559
    assert gpu.driver_version == "580.159.04"
    assert gpu.compute_capability == "9.0"
    assert gpu.mig_mode == "Disabled"


def test_eight_gpus() -> None:
    base = h100_line().split(", ")
    lines = []
    for i in range(8):
        fields = list(base)
        fields[0] = str(i)
        fields[1] = fields[1][:-1] + str(i)
        lines.append(", ".join(fields))
    gpus = parse_inventory("\n".join([*lines, "uvm=ok"]))
    assert [g.index for g in gpus] == list(range(8))
    assert len({g.uuid for g in gpus}) == 8


def test_mig_not_applicable() -> None:
    line = h100_line().replace("Disabled", "[N/A]")
    assert parse_inventory(f"{line}\nuvm=ok").pop().mig_mode == "N/A"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "did not finish with `uvm=ok`"),
        ("{line}\n", "did not finish with `uvm=ok`"),
        ("uvm=ok\n", "saw no GPU"),
        ("{line}, extra\nuvm=ok", "has 8 fields, expected 7"),
        ("{units}\nuvm=ok", "bad memory.total"),
        ("{noindex}\nuvm=ok", "bad index"),
        ("{line}\n{line}\nuvm=ok", "are not 0..1"),
        ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver\nuvm=ok", "fields"),
    ],
    ids=["empty", "no-uvm", "no-gpu", "extra-field", "units-left-in", "bad-index", "duplicate-index", "smi-error"],
)
def test_malformed_output_is_refused(text: str, message: str) -> None:
    line = h100_line()
    text = text.format(line=line, units=line.replace("81559", "81559 MiB"), noindex=line.replace("0,", "x,", 1))
    with pytest.raises(InventoryError, match=message.replace("(", r"\(").replace(".", r"\.")) as caught:
        parse_inventory(text, "gpu-b")
    assert "gpu-b" in str(caught.value)
