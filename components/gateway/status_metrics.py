"""The gateway's request counts by HTTP status, which nginx OSS's stub_status does not have.

nginx sends one extra access-log line per request over UDP syslog to an mtail sidecar, which
counts them with the program in `mtail/gateway.mtail` (metric names documented there) and serves
them to Prometheus. UDP never makes nginx wait: with mtail down only the metrics are lost.
"""

from __future__ import annotations

from pathlib import Path

CONTEXT_DIR = Path(__file__).with_name("mtail")
PROGRAM_FILE = CONTEXT_DIR / "gateway.mtail"
PROGRAMS_DIR = "/etc/mtail"
"""Where the image has the program (the Dockerfile copies it there)."""
IMAGE = "inference-stack/mtail:3.0.0-rc50"
METRICS_PORT = 3903
SYSLOG_PORT = 5140
SYSLOG_TAG = "gateway"

RESPONSES = "gateway_http_responses_total"
DURATION = "gateway_http_request_duration_seconds"


def program() -> str:
    """The mtail program, as the image bakes it in and the tests run it."""
    text = PROGRAM_FILE.read_text()
    for metric in (RESPONSES, DURATION):
        if f" {metric} by " not in text:
            raise ValueError(f"{PROGRAM_FILE.name} no longer declares {metric}; the dashboards and alerts query it")
    return text


def command(
    syslog_port: int = SYSLOG_PORT,
    metrics_port: int = METRICS_PORT,
    address: str = "0.0.0.0",
    programs_dir: str = PROGRAMS_DIR,
) -> list[str]:
    """mtail's arguments: the syslog stream on UDP, metrics over HTTP. Without the `prog` label the
    series carry exactly the labels the program documents."""
    return [
        "--progs",
        programs_dir,
        "--logs",
        f"udp://{address}:{syslog_port}",
        "--address",
        address,
        "--port",
        str(metrics_port),
        "--logtostderr",
        "--emit_prog_label=false",
    ]
