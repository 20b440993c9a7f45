"""The stack's own keys, the same on either target: the workers' key and the generated client key."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from composition.loader import LoadedStack


def generates_client_key(stack: LoadedStack) -> bool:
    """`gateway.generateClientKey`, which defaults to on exactly when the stack sets no client keys."""
    explicit = stack.config.gateway.generate_client_key
    return explicit if explicit is not None else "gatewayApiKeys" not in stack.secrets


def worker_api_key(stack: LoadedStack) -> pulumi.Output[str]:
    key = stack.secrets.get("vllmApiKey")
    if key is not None:
        return key
    # Workers only ever talk to the gateway, so nobody needs to know this key up front;
    # generating it beats leaving the API open. RandomPassword results are secret in state.
    return random.RandomPassword("vllm-api-key", length=48, special=False).result
