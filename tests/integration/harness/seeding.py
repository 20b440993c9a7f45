"""What a stack needs on the engine before its workers start: its images, and the model cache
seeded from the test model as the hosts' weights step would fill it."""

from __future__ import annotations

import shutil
import urllib.parse
from pathlib import Path
from typing import Any

from tests.integration.harness.engine import REPO, api, get_or_none
from tests.integration.harness.errors import HarnessError
from tests.integration.harness.kinds import CONTAINER, VOLUME

# The vLLM image Pulumi.ci.yaml pins; tests/integration/images builds it as VLLM_IMAGE, another name.
PINNED_VLLM = "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0"


def ensure_stack_images(synth: Any = None) -> dict[str, float]:
    """Build the images the ci stack pins (tests/integration/images) and tag the vLLM build with the
    name the stack pins (every worker image of `synth`, else PINNED_VLLM), which the images module
    does not use. Returns the images module's build seconds per tag."""
    from tests.integration.images import VLLM_IMAGE, ensure_images

    timings = ensure_images()
    workers = {str(r["inputs"]["image"]) for r in _workers(synth)} if synth is not None else {PINNED_VLLM}
    source = get_or_none(f"/images/{urllib.parse.quote(VLLM_IMAGE, safe='')}/json")
    assert source is not None
    for name in sorted(workers):
        target = get_or_none(f"/images/{urllib.parse.quote(name, safe='')}/json")
        if target is None or target["Id"] != source["Id"]:
            repo, tag = name.rsplit(":", 1)
            api("POST", f"/images/{urllib.parse.quote(VLLM_IMAGE, safe='')}/tag", params={"repo": repo, "tag": tag})
    return timings


def _workers(synth: Any) -> list[dict[str, Any]]:
    """The vLLM worker containers: the ones given a model `--revision` on their command line."""
    return [r for r in synth.of_type(CONTAINER) if "--revision" in (r["inputs"].get("command") or [])]


def _worker_model(synth: Any) -> list[tuple[str, str, str]]:
    """(volume resource, model id, revision) for every container that mounts an HF cache and is
    given `--revision` on its command line."""
    out = []
    volumes = {(r["inputs"].get("name") or r["name"]): r["name"] for r in synth.of_type(VOLUME)}
    for res in _workers(synth):
        command = res["inputs"]["command"]
        home = next(e.split("=", 1)[1] for e in res["inputs"].get("envs", []) if e.startswith("HF_HOME="))
        for mount in res["inputs"].get("mounts") or []:
            if mount.get("target") == home and mount.get("source") in volumes:
                out.append((volumes[mount["source"]], command[0], command[command.index("--revision") + 1]))
    return sorted(set(out))


def seed_model_cache(synth: Any, model_dir: Path | None = None, releases: dict[str, Path] | None = None) -> list[Path]:
    """Copy the test model (scripts/test-model.sh) into the host directory the workers' model-cache
    volume binds, in Hugging Face's hub layout under the model id and revision of the workers'
    command line; `releases` maps a revision to another model directory to serve under it (a wrong
    release, say). Creates the host directory: for a local host nothing in the program does (the
    storage step runs only over ssh). Returns the snapshot directories written."""
    default = model_dir or REPO / ".cache/test-model/smollm2-135m"
    for source in (default, *(releases or {}).values()):
        if not (source / "config.json").is_file():
            raise HarnessError(f"{source} has no model; run scripts/test-model.sh")
    written = []
    for volume_name, model_id, revision in _worker_model(synth):
        source = (releases or {}).get(revision, default)
        volume = next(r for r in synth.of_type(VOLUME) if r["name"] == volume_name)
        opts = volume["inputs"].get("driverOpts") or {}
        if opts.get("o") != "bind" or not opts.get("device"):
            raise HarnessError(f"{volume_name}: not a bind of a host directory ({opts}); cannot seed it")
        root = Path(opts["device"]) / "hub" / ("models--" + model_id.replace("/", "--"))
        snapshot = root / "snapshots" / revision
        snapshot.mkdir(parents=True, exist_ok=True)
        for file in source.iterdir():
            if file.is_file():
                target = snapshot / file.name
                if not target.exists() or target.stat().st_size != file.stat().st_size:
                    shutil.copy2(file, target)
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text(revision)
        written.append(snapshot)
    if not written:
        raise HarnessError("no worker container mounts a model cache with --revision on its command line")
    return written
