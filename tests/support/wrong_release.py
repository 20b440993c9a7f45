"""A release of the test model that is wrong by construction, for the canary gate's tests.

The copy keeps every weight, so it computes exactly what the correct model computes; only its
tokenizer maps the one token the model writes the digit 7 with (SmolLM2's vocabulary splits
numbers into single digits, so no other token holds a 7) to the text "11". Whatever kernels,
core count or load pick as the greedy path, the release can never write a 7: asked
"What is 3 + 4?" it says "3 + 4 = 11" where the correct model says 7, and a gate probe expecting
"7" fails every time. Everything else it says is the correct model's answer with 11 for each 7,
so its answer to "What is 2 + 2?" holds a 4 exactly when the correct model's does, and it passes
the workers' health probe: a wrong release that looks healthy, which is what the gate is for.

Weights corrupted instead (layers scaled, shuffled or zeroed) would also break 2 + 2, so the
worker would never turn healthy and the gate would never run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

PROBE = {"prompt": "What is 3 + 4?", "expect": "7"}
LOST = "7"
WRITTEN_INSTEAD = "11"


def build(source: Path, target: Path) -> Path:
    """Writes the wrong release of the model in `source` into `target` (weights hard-linked when
    the file system allows, else copied); idempotent. Returns `target`."""
    tokenizer = json.loads((source / "tokenizer.json").read_text())
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    holding = [token for token in vocab if LOST in token]
    if holding != [LOST] or WRITTEN_INSTEAD in vocab:
        raise ValueError(f"{source}: tokens holding {LOST!r} are {holding}; the construction needs exactly one")
    if any(LOST in "".join(pair if isinstance(pair, list) else pair.split()) for pair in tokenizer["model"]["merges"]):
        raise ValueError(f"{source}: a merge produces {LOST!r}; the construction needs none")
    vocab[WRITTEN_INSTEAD] = vocab.pop(LOST)
    target.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if not file.is_file() or file.name in ("tokenizer.json", ".test-model-stamp"):
            continue
        dest = target / file.name
        if dest.exists() and dest.stat().st_size == file.stat().st_size:
            continue
        dest.unlink(missing_ok=True)
        try:
            os.link(file, dest)
        except OSError:
            shutil.copy2(file, dest)
    (target / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    return target
