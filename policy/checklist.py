"""The article's production checklist as CrossGuard policies, on the containers the program declares.

Each policy reads only the resource's inputs (camelCase, as the engine names them). Values that are
unknown during a preview raise pulumi_policy's UnknownValueError on access, which the analyzer (and
`tools/policy_run.py`) treats as "cannot say yet", never as a crash. A policy that does not concern a
resource calls `args.not_applicable(...)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyComplianceFramework,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)

CONTAINER = "docker:index/container:Container"
ARTICLE = PolicyComplianceFramework(
    name="docker-ai-workloads-2026 production checklist",
    version="2026",
    reference="shared/reference/docker-ai-workloads-2026.md",
)
# Every policy accepts a justification, so a relaxed enforcement level in a stack's pack config
# can say why (the Pulumi CLI refuses config properties a policy does not declare).
JUSTIFIABLE = PolicyConfigSchema(properties={"justification": {"type": "string"}})
MAX_GPU_MEMORY_UTILIZATION = 0.90
HF_HOME = "/root/.cache/huggingface"
PROBE = "/opt/inference-stack/healthcheck.py"


def seconds(duration: str) -> float:
    """Docker's duration strings as the provider takes them: 90s, 2m, 1m30s, 500ms."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(float(n) * units[u] for n, u in parts)


def labels(props: Mapping[str, Any]) -> dict[str, str]:
    return {str(item["label"]): str(item["value"]) for item in props.get("labels") or []}


def is_worker(props: Mapping[str, Any]) -> bool:
    return labels(props).get("inference-stack.role") == "worker"


def flag(command: Sequence[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in a command line."""
    for i, arg in enumerate(command):
        if arg == name and i + 1 < len(command):
            return str(command[i + 1])
        if arg.startswith(name + "="):
            return str(arg.split("=", 1)[1])
    return None


Check = Callable[[Mapping[str, Any], Callable[[str], None]], None]


def container_policy(
    name: str,
    description: str,
    severity: Severity,
    check: Check,
    workers_only: bool = False,
    framework: PolicyComplianceFramework = ARTICLE,
    enforcement_level: EnforcementLevel | None = None,
) -> ResourceValidationPolicy:
    """A policy on Docker containers (on vLLM workers only, when `workers_only`)."""

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type != CONTAINER:
            args.not_applicable("not a Docker container")
            return
        if workers_only and not is_worker(args.props):
            args.not_applicable("not a vLLM worker")
            return
        check(args.props, lambda message: report_violation(message, None))

    return ResourceValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        severity=severity,
        framework=framework,
        config_schema=JUSTIFIABLE,
        enforcement_level=enforcement_level,
    )


def _start_period(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    declared = labels(props).get("inference-stack.cold-start-seconds")
    if declared is None:
        report("label `inference-stack.cold-start-seconds` is missing: declare the worker's cold start")
        return
    start = seconds((props.get("healthcheck") or {}).get("startPeriod", "0s"))
    if start < 2 * float(declared):
        report(
            f"healthcheck startPeriod {start:g}s is under 2x the declared cold start ({declared}s): "
            f"set health.startPeriodSeconds to at least {2 * int(declared)}"
        )


def _weights_mounted(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    mounts = [m for m in props.get("mounts") or [] if m.get("target") == HF_HOME]
    if not mounts or mounts[0].get("type") not in ("volume", "bind"):
        report(f"no volume or bind mount at {HF_HOME}: weights must come from the model cache, never the image")


def _gpu_memory_utilization(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    for env in props.get("envs") or []:
        if "GPU_MEMORY_UTILIZATION" in str(env).split("=", 1)[0].upper():
            report(f"env `{str(env).split('=', 1)[0]}` tries to set GPU memory utilization: use the CLI flag only")
    if labels(props).get("inference-stack.accelerator") != "nvidia":
        return
    value = flag(props.get("command") or [], "--gpu-memory-utilization")
    if value is None:
        report("`--gpu-memory-utilization` is not on the command line: set workers[].gpuMemoryUtilization")
    elif float(value) > MAX_GPU_MEMORY_UTILIZATION:
        report(f"--gpu-memory-utilization {value} is above {MAX_GPU_MEMORY_UTILIZATION}: lower gpuMemoryUtilization")


def _limits(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    if not props.get("memory"):
        report("no memory limit: set `memory` (MB) on the container")
    if not props.get("cpus") and not props.get("cpuPeriod"):
        report("no CPU limit: set `cpus` on the container")


def _health_gated(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    if not props.get("wait"):
        report("`wait` is off: `pulumi up` would move on before the worker is healthy")
        return
    start = seconds((props.get("healthcheck") or {}).get("startPeriod", "0s"))
    if float(props.get("waitTimeout") or 0) < start:
        report(f"waitTimeout {props.get('waitTimeout')}s is under the start period {start:g}s: raise it")


def _probes_the_model(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    test = [str(word) for word in (props.get("healthcheck") or {}).get("tests") or []]
    if PROBE not in test or "--model" not in test:
        report(f"the healthcheck {test} only checks HTTP: run the accuracy probe ({PROBE} --model ...)")


def _chat_endpoint(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    test = " ".join(str(word) for word in (props.get("healthcheck") or {}).get("tests") or [])
    if "/v1/completions" in test:
        report("the probe calls /v1/completions: chat models are probed through /v1/chat/completions")


def _logging(props: Mapping[str, Any], report: Callable[[str], None]) -> None:
    for env in props.get("envs") or []:
        key, _, value = str(env).partition("=")
        if key.endswith(("LOG_LEVEL", "LOGGING_LEVEL")) and value.upper() in ("DEBUG", "TRACE"):
            report(f"{key}={value}: debug logging leaks prompts and fills disks; use INFO")
    command = [str(a) for a in props.get("command") or []]
    for name in ("--log-level", "--uvicorn-log-level"):
        level = flag(command, name)
        if level is not None and level.lower() in ("debug", "trace"):
            report(f"{name} {level}: use info")
    options = props.get("logOpts") or {}
    if props.get("logDriver") not in ("json-file", "local") or "max-size" not in options:
        report("no log rotation: set logDriver json-file with logOpts max-size and max-file")


RESOURCE_POLICIES = [
    container_policy(
        "health-start-period-covers-cold-start",
        "A worker's healthcheck start period is at least twice its declared cold start (the label "
        "`inference-stack.cold-start-seconds`), so a slow load is not killed as unhealthy.",
        Severity.HIGH,
        _start_period,
        workers_only=True,
    ),
    container_policy(
        "weights-from-mounted-volume",
        "A worker reads its weights from the model-cache volume mounted at HF_HOME, never from its image.",
        Severity.HIGH,
        _weights_mounted,
        workers_only=True,
    ),
    container_policy(
        "gpu-memory-utilization-cli",
        "`--gpu-memory-utilization` is a CLI argument of every GPU worker, at most 0.90, and no env var "
        "tries to set it.",
        Severity.HIGH,
        _gpu_memory_utilization,
        workers_only=True,
    ),
    container_policy(
        "cpu-and-memory-limits",
        "Every container has a CPU and a memory limit, so one runaway process cannot starve the GPU workers.",
        Severity.MEDIUM,
        _limits,
    ),
    container_policy(
        "health-gated-creation",
        "Workers are created with `wait` on and a `waitTimeout` of at least the start period: `pulumi up` "
        "finishes only once the model answers.",
        Severity.HIGH,
        _health_gated,
        workers_only=True,
    ),
    container_policy(
        "health-check-exercises-model",
        "A worker's healthcheck runs the accuracy probe (a real completion), not only an HTTP check.",
        Severity.HIGH,
        _probes_the_model,
        workers_only=True,
    ),
    container_policy(
        "chat-probe-endpoint",
        "Probes of chat models go through /v1/chat/completions, where the chat template applies.",
        Severity.MEDIUM,
        _chat_endpoint,
        workers_only=True,
    ),
    container_policy(
        "no-debug-logs-and-rotation",
        "No container logs at DEBUG, and every container's logs rotate.",
        Severity.MEDIUM,
        _logging,
    ),
]


def _every_worker_scraped(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    containers = [r for r in args.resources if r.resource_type == CONTAINER]
    workers = [r for r in containers if is_worker(r.props)]
    if not workers:
        args.not_applicable("no vLLM workers")
        return
    configs = [
        str(upload.get("content", ""))
        for r in containers
        for upload in r.props.get("uploads") or []
        if str(upload.get("file", "")).endswith("prometheus.yml")
    ]
    for worker in workers:
        props = worker.props
        port = flag([str(a) for a in props.get("command") or []], "--port") or "8000"
        addresses = [f"{props.get('name')}:{port}"]
        addresses += [f"{p.get('ip')}:{p.get('external')}" for p in props.get("ports") or []]
        if not any(address in config for address in addresses for config in configs):
            report_violation(
                f"worker {props.get('name')} is not a Prometheus scrape target (looked for {addresses}): "
                "keep observability.enabled on",
                worker.urn,
            )


STACK_POLICIES = [
    StackValidationPolicy(
        name="every-worker-is-scraped",
        description="Every vLLM worker is a Prometheus scrape target: TTFT and queue depth are the SLOs.",
        validate=_every_worker_scraped,
        severity=Severity.HIGH,
        framework=ARTICLE,
        config_schema=JUSTIFIABLE,
    ),
]
