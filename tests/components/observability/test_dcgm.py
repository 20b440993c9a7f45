"""The DCGM exporter series our rules and dashboard use, against the exporter the stack pins.

Facts from NVIDIA/dcgm-exporter at tag 4.2.3-4.1.3, the image stacks/config.py pins (docs/dcgm-facts.md):
- tests/fixtures/dcgm/default-counters-4.2.3-4.1.3.csv: the exporter's etc/default-counters.csv verbatim (the
  file the image reads by default), below a `# source:` line.
- tests/fixtures/dcgm/metrics-dcgm-exporter-4.2.3-4.1.3.txt: a SYNTHESIZED exposition, as its header says:
  the repository holds no real /metrics output. Names, HELP and TYPE from the CSV, label names and value
  formatting from the exporter's text template, values from `nvidia-smi -q -x` on the project's H100 host.

1. The pinned image is that tag; the CSV copy is upstream's file byte for byte.
2. The exposition parses (promtool) and agrees with the CSV: every family enabled by default, same TYPE
   and HELP; every default GPU counter it leaves out is listed with the reason.
3. Every DCGM_* name in the rendered rules and the dashboard is a default counter, in the exposition, in
   the unit we assume; every label a legend, annotation, matcher or grouping uses is on the series or put
   there by our scrape config.
4. Debian's Prometheus scrapes the exposition through our prometheus.yml and rules: the GPU panels and the
   GPU memory alert's ratio return data, with our `host` label, in range.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.observability.grafana import PANELS
from components.observability.prometheus import DCGM_JOB, RULES_PATH, Target, render_prometheus_yml, render_rules
from stacks.config import ObservabilityConfig, SloConfig
from tests.components.observability.test_prometheus import (
    get_json,
    grouping_labels,
    matchers,
    metric_names,
    parse_exposition,
    prometheus,
    query,
    wait_for,
)
from tests.support.exposition import served_exposition
from tests.support.tools import require_tool

TAG = "4.2.3-4.1.3"
FIXTURES = Path(__file__).parents[2] / "fixtures/dcgm"
EXPOSITION = FIXTURES / f"metrics-dcgm-exporter-{TAG}.txt"
COUNTERS = FIXTURES / f"default-counters-{TAG}.csv"
# `git show 4.2.3-4.1.3:etc/default-counters.csv | sha256sum` in NVIDIA/dcgm-exporter (blob aa77a4e4).
COUNTERS_SHA256 = "c8170c6bc0479a4505d3d2304fa4256efe80020f8d3eea6f8c29147113124240"

SLO = SloConfig()
TEXT = EXPOSITION.read_text()
SAMPLES = parse_exposition(TEXT)
DCGM = re.compile(r"DCGM_\w+")
# As components/observability/monitoring.py builds each exporter's scrape target.
DCGM_TARGET = Target("10.0.0.11:9400", {"host": "gpu-a"})
# Labels every series of the dcgm job gets from Prometheus and our prometheus.yml, not from the exporter.
SCRAPE_LABELS = {"job", "instance", *DCGM_TARGET.labels}
H100_MIB = 81559  # nvidia-smi memory.total of the H100 80GB the exposition's values come from
H100_POWER_LIMIT_W = 700.0  # its nvidia-smi power limit

# Default GPU counters the synthesized exposition leaves out: the nvidia-smi capture has no value for them.
LEFT_OUT = {
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
    "DCGM_FI_DEV_VGPU_LICENSE_STATUS",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    "DCGM_FI_PROF_DRAM_ACTIVE",
    "DCGM_FI_PROF_PCIE_TX_BYTES",
    "DCGM_FI_PROF_PCIE_RX_BYTES",
}
# The labels the exporter's GPU template (internal/pkg/rendermetrics/render_metrics.go) writes on a GPU
# without MIG, Hostname unless --no-hostname, then the CSV's `label` fields.
EXPORTER_LABELS = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"]
# The unit each series we use is in, as the exporter's HELP text says it.
UNITS = {
    "DCGM_FI_DEV_GPU_UTIL": "(in %)",
    "DCGM_FI_DEV_FB_USED": "(in MiB)",
    "DCGM_FI_DEV_FB_FREE": "(in MiB)",
    "DCGM_FI_DEV_GPU_TEMP": "(in C)",
    "DCGM_FI_DEV_POWER_USAGE": "(in W)",
}
# Grafana unit ids for them (grafana-data valueFormats): 0–100 percent, and mebibytes (not SI `decmbytes`).
GRAFANA_UNITS = {"DCGM_FI_DEV_GPU_UTIL": "percent", "DCGM_FI_DEV_FB_USED": "mbytes", "DCGM_FI_DEV_FB_FREE": "mbytes"}
# Plausible values on one H100 80GB, for the real-Prometheus check.
RANGES = {
    "DCGM_FI_DEV_GPU_UTIL": (0.0, 100.0),
    "DCGM_FI_DEV_FB_USED": (0.0, float(H100_MIB)),
    "DCGM_FI_DEV_GPU_TEMP": (0.0, 120.0),
    "DCGM_FI_DEV_POWER_USAGE": (0.0, H100_POWER_LIMIT_W),
}
# The issue asks for these to be available, besides what the rules and dashboard use today.
WANTED = {"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE"}


def default_counters() -> dict[str, tuple[str, str]]:
    """name -> (type, help) of the CSV's enabled rows, read as the exporter's ExtractCounters reads them
    (internal/pkg/counters/counter_config.go: `#` lines are comments, every field trimmed of spaces)."""
    lines = [line for line in COUNTERS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    out = {}
    for record in csv.reader(lines):
        fields = [field.strip(" ") for field in record]
        assert len(fields) == 3, record
        out[fields[0]] = (fields[1], fields[2])
    return out


COUNTER_TYPES = default_counters()


def families() -> dict[str, tuple[str, str]]:
    """name -> (TYPE, HELP) of every family in the exposition."""
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", TEXT, re.M))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", TEXT, re.M))
    assert helps.keys() == types.keys()
    return {name: (types[name], helps[name]) for name in types}


def series_labels(metric: str) -> list[dict[str, str]]:
    return [labels for name, labels, _ in SAMPLES if name == metric]


def used_exprs() -> list[tuple[str, str, set[str]]]:
    """(where, PromQL, labels its legend or annotations name) of every rule in the rendered rules file
    and every dashboard query that uses a DCGM series."""
    out = []
    for group in yaml.safe_load(render_rules(SLO))["groups"]:
        for rule in group["rules"]:
            refs = {
                ref for text in rule.get("annotations", {}).values() for ref in re.findall(r"\$labels\.(\w+)", text)
            }
            out.append((f"rule {rule.get('alert') or rule.get('record')}", str(rule["expr"]), refs))
    for title, _, queries in PANELS:
        for legend, expr in queries:
            out.append((f"panel {title} / {legend}", expr, set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))))
    return [(where, expr, refs) for where, expr, refs in out if any(DCGM.fullmatch(m) for m in metric_names(expr))]


USED = used_exprs()
USED_NAMES = sorted({m for _, expr, _ in USED for m in metric_names(expr) if DCGM.fullmatch(m)})


# --- 1. the fixtures are the pinned exporter's ---------------------------------------------------


def test_the_pinned_image_is_the_tag_the_fixtures_come_from() -> None:
    image = ObservabilityConfig().dcgm_exporter_image
    assert image == f"nvcr.io/nvidia/k8s/dcgm-exporter:{TAG}-ubuntu22.04", (
        f"{image}: re-verify tests/fixtures/dcgm and docs/dcgm-facts.md against that tag first"
    )


def test_counters_csv_is_upstreams_file_verbatim() -> None:
    first, rest = COUNTERS.read_bytes().split(b"\n", 1)
    assert first.startswith(f"# source: NVIDIA/dcgm-exporter@{TAG} ".encode())
    assert hashlib.sha256(rest).hexdigest() == COUNTERS_SHA256


def test_exposition_says_it_is_synthesized() -> None:
    first = TEXT.splitlines()[0]
    assert first.startswith(f"# source: synthesized from NVIDIA/dcgm-exporter@{TAG} "), first
    assert first.endswith("no real exposition available"), first


# --- 2. the exposition parses and agrees with the CSV --------------------------------------------


def test_exposition_parses_with_promtool(tmp_path: Path) -> None:
    """`promtool check metrics` exits 1 on a parse error, 3 on lint findings only (DCGM's counters lack
    `_total`, `modelName` is camelCase: both are the exporter's real naming)."""
    promtool = require_tool("promtool")
    for text, parses in ((TEXT, True), (TEXT.replace("# TYPE DCGM_FI_DEV_FB_USED gauge", "# TYPE x gauge\nx{"), False)):
        result = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
        )
        output = result.stdout + result.stderr
        if parses:
            assert result.returncode in (0, 3), output
            assert "error while linting" not in output, output
        else:  # the check is real: a broken line fails it
            assert result.returncode == 1, output


def test_every_family_is_a_default_counter_with_its_type_and_help() -> None:
    exposed = families()
    for name, (prom_type, help_text) in exposed.items():
        assert name in COUNTER_TYPES, f"{name} is not enabled in {TAG}'s default-counters.csv"
        assert (prom_type, help_text) == COUNTER_TYPES[name], name
    gpu_counters = {name for name, (prom_type, _) in COUNTER_TYPES.items() if prom_type != "label"}
    assert gpu_counters - exposed.keys() == LEFT_OUT, "left out of the exposition without a reason"
    assert all(name.startswith("DCGM_FI_") for name in exposed)


def test_every_series_has_the_exporters_labels_in_its_order() -> None:
    assert SAMPLES
    for name, labels, value in SAMPLES:
        assert list(labels) == EXPORTER_LABELS, name
        assert labels["device"] == f"nvidia{labels['gpu']}" and labels["UUID"].startswith("GPU-"), labels
        assert labels["modelName"] == "NVIDIA H100 80GB HBM3", labels
        assert math.isfinite(value), name
    assert len(SAMPLES) == len(families()), "one GPU: one series a family"


# --- 3. what the rules and dashboard use exists --------------------------------------------------


def test_the_rules_and_dashboard_use_dcgm_series() -> None:
    wheres = [where for where, _, _ in USED]
    assert any(w.startswith("rule ") for w in wheres) and any(w.startswith("panel ") for w in wheres), wheres
    assert {"DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_GPU_UTIL"} <= set(USED_NAMES), USED_NAMES


@pytest.mark.parametrize("metric", [*USED_NAMES, *sorted(WANTED - set(USED_NAMES))])
def test_metric_is_a_default_gauge_in_the_exposition_in_the_unit_we_assume(metric: str) -> None:
    assert metric in COUNTER_TYPES, f"{metric} is not enabled in {TAG}'s default-counters.csv"
    prom_type, help_text = COUNTER_TYPES[metric]
    assert prom_type == "gauge", (metric, prom_type)
    assert metric in UNITS, f"{metric}: add the unit it is in (its HELP: {help_text!r})"
    assert help_text.endswith(UNITS[metric] + "."), (metric, help_text)
    assert series_labels(metric), f"{metric} is not in {EXPOSITION.name}"


@pytest.mark.parametrize(("where", "expr", "refs"), USED, ids=[where for where, _, _ in USED])
def test_labels_used_with_dcgm_series_exist(where: str, expr: str, refs: set[str]) -> None:
    used = refs | grouping_labels(expr) | {label for metric, label, _, _ in matchers(expr) if DCGM.fullmatch(metric)}
    assert used, f"{where}: names no label; a GPU legend or annotation should say which GPU"
    for metric in (m for m in metric_names(expr) if DCGM.fullmatch(m)):
        for label in used - SCRAPE_LABELS:
            assert all(label in labels for labels in series_labels(metric)), f"{where}: {metric} has no {label!r}"
    # The exporter's `Hostname` is the container's hostname under Docker, and main renames it to
    # `hostname` after this tag (NVIDIA/dcgm-exporter d5e5f51): our `host` label is the one to use.
    assert not used & {"Hostname", "hostname"}, where


def test_scrape_config_puts_our_host_label_on_the_dcgm_job() -> None:
    doc = yaml.safe_load(render_prometheus_yml([], [DCGM_TARGET], None))
    job = next(j for j in doc["scrape_configs"] if j["job_name"] == DCGM_JOB)
    assert job["static_configs"] == [{"targets": [DCGM_TARGET.address], "labels": DCGM_TARGET.labels}]
    assert not set(DCGM_TARGET.labels) & set(EXPORTER_LABELS), "the exporter would set it too"


@pytest.mark.parametrize(
    ("title", "metric"),
    [
        (title, m)
        for title, _, queries in PANELS
        for _, expr in queries
        for m in metric_names(expr)
        if DCGM.fullmatch(m)
    ],
)
def test_panel_unit_matches_the_exporters_unit(title: str, metric: str) -> None:
    unit = next(unit for t, unit, _ in PANELS if t == title)
    # `decmbytes` would be SI megabytes; DCGM's framebuffer counters are MiB (Grafana's `mbytes`).
    assert unit == GRAFANA_UNITS[metric], (title, metric, unit)


# --- 4. Debian's Prometheus scraping the exposition ----------------------------------------------


def result_of(prom: str, expr: str) -> list[dict[str, Any]]:
    answer = query(prom, expr)
    assert answer["status"] == "success", f"{expr}: {answer}"
    assert answer["data"]["resultType"] == "vector", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def fixture_value(metric: str) -> float:
    (value,) = [v for name, _, v in SAMPLES if name == metric]
    return value


def test_real_prometheus_evaluates_the_gpu_panels_and_alert_on_the_exposition(tmp_path: Path) -> None:
    require_tool("prometheus")
    rules = tmp_path / "inference.yml"
    rules.write_text(render_rules(SLO))
    with served_exposition(lambda _scrape: TEXT) as address:
        target = Target(address, DCGM_TARGET.labels)
        config = render_prometheus_yml([], [target], None, scrape_interval="1s")
        with prometheus(tmp_path, config.replace(RULES_PATH, str(rules))) as prom:

            def dcgm_up() -> bool:
                result = result_of(prom, f'up{{job="{DCGM_JOB}"}}')
                return bool(result) and float(result[0]["value"][1]) == 1

            wait_for("the DCGM exposition to be scraped", dcgm_up, 20)
            wanted = [(f"wanted {m}", m, {"gpu", "host"}) for m in sorted(WANTED)]
            for where, expr, refs in [*USED, *wanted]:
                if where.startswith("rule "):
                    alert = re.fullmatch(r"(.+?)\s*(>|<|>=|<=)\s*([0-9.e+-]+)", expr)
                    assert alert, f"{where}: {expr} is not `<ratio> <op> <threshold>`"
                    assert result_of(prom, expr) == [], f"{where}: fires on an idle GPU"
                    expr = alert[1]
                result = result_of(prom, expr)
                assert result, f"{where}: {expr} returns no data"
                for sample in result:
                    assert refs <= set(sample["metric"]), (where, refs, sample["metric"])
                    assert sample["metric"]["host"] == DCGM_TARGET.labels["host"], sample
                    value = float(sample["value"][1])
                    names = [m for m in metric_names(expr) if DCGM.fullmatch(m)]
                    if where == "rule GPUMemoryNearFull":
                        used, free = fixture_value("DCGM_FI_DEV_FB_USED"), fixture_value("DCGM_FI_DEV_FB_FREE")
                        assert 0.0 <= value <= 1.0 and value == pytest.approx(used / (used + free)), value
                    else:
                        (name,) = names
                        low, high = RANGES[name]
                        assert low <= value <= high and value == pytest.approx(fixture_value(name)), (where, value)

            def evaluated() -> list[dict[str, Any]]:
                groups: list[dict[str, Any]] = get_json(f"{prom}/api/v1/rules")["data"]["groups"]
                rules_ = [r for g in groups for r in g["rules"] if DCGM.search(r["query"])]
                return rules_ if rules_ and all(r["health"] != "unknown" for r in rules_) else []

            dcgm_rules = wait_for("the DCGM rules to be evaluated", evaluated, 15)
            assert all(r["health"] == "ok" for r in dcgm_rules), dcgm_rules
            assert all(r.get("state", "inactive") == "inactive" for r in dcgm_rules), dcgm_rules
