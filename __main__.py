"""inference-stack: self-hosted vLLM on Docker GPU hosts. The composition lives in stacks/."""

from stacks.platform import main

main()
