"""The README tells the truth: its set-up commands, config reference and diagram match the code."""

from __future__ import annotations

import re
from pathlib import Path

from tools import docs, render
from tools.synth import ROOT

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


def test_reference_shows_ranges_lengths_and_formats() -> None:
    rows = {line.split(" | ")[0].strip("| `"): line for line in docs.reference().splitlines() if line.startswith("| `")}
    assert "| [1, 65535] |" in rows["gateway.port"]
    assert "| (0, 2000] |" in rows["workers[].model.shape.parametersBillion"]
    assert "| [1024, 1048576] |" in rows["hosts[].gpus.memoryMib"]
    assert "| at least 1 item |" in rows["inference-stack:workers"]
    assert "| at least 1 item |" in rows["kubernetes.nodePools"]
    assert "| `^[a-z][a-z0-9-]{0,30}[a-z0-9]$` |" in rows["hosts[].name"]
    assert "| each `^[a-z][a-z0-9-]{0,30}[a-z0-9]$` |" in rows["workers[].hosts"]
    assert "| 1 to 4000 characters |" in rows["workers[].canary.gate.probes[].prompt"]


def test_first_contact_is_documented_before_the_quick_start() -> None:
    text = README.read_text()
    before = text.split("```sh", 1)[0]
    pin = re.search(r"^PULUMI_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert pin and f"Pulumi CLI v{pin.group(1)}" in before
    for needed in ("Docker Engine", "huggingface.co", "PULUMI=/path/to/pulumi make up"):
        assert needed in before, needed
    # A secret for the file `make up` deploys, and the same backend and passphrase outside make.
    assert "pulumi config set --secret --stack dev --config-file .state/Pulumi.dev.yaml" in text
    assert "export PULUMI_BACKEND_URL=file://$PWD/.state" in text
    assert "PULUMI_CONFIG_PASSPHRASE_FILE=$PWD/.state/passphrase" in text
    assert "--show-secrets firstRequest" in text


def test_a_validator_checked_field_can_name_its_format() -> None:
    from pydantic import BaseModel, Field

    class Example(BaseModel):
        revision: str = Field(json_schema_extra={"allowed": "40 hex characters"})
        port: int = Field(default=1, ge=1, le=9)

    assert docs.allowed(Example.model_fields["revision"]) == "40 hex characters"
    assert docs.allowed(Example.model_fields["port"]) == "[1, 9]"
