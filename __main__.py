"""inference-stack: self-hosted vLLM on Docker GPU hosts. The composition lives in composition/."""

from composition.platform import main

main()
