"""The README tells the truth: its set-up commands, config reference and diagram match the code."""

from __future__ import annotations

import re
from pathlib import Path

from stacks import docs, render
from stacks.synth import ROOT

README = ROOT / "README.md"


def test_config_reference_is_in_sync_with_the_schema() -> None:
    text = README.read_text()
    assert docs.splice(text) == text, "run `make docs`"


def test_config_reference_names_every_field() -> None:
    ref = docs.reference()
    for key in ("gpuMemoryUtilization", "coldStartSeconds", "startPeriodSeconds", "privateAddress", "hfToken"):
        assert key in ref


def test_opens_with_exactly_two_setup_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README.read_text(), re.S)
    assert first_block
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["make up", "make test"]


def test_diagram_matches_the_dev_synth(tmp_path: Path) -> None:
    assert render.main(["--stack", "dev", "--out", str(tmp_path)]) == 0
    diagram = (tmp_path / "dev/diagram.mmd").read_text().strip()
    assert diagram in README.read_text(), "paste build/dev/diagram.mmd into the README"


def test_makefile_targets_the_readme_names() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("up", "test", "render", "preview", "docs", "bench"):
        assert re.search(rf"^{target}:", makefile, re.M), target
