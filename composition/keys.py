"""The stack's own keys, the same on either target: the workers', Redis's and Weaviate's, generated
when the stack sets none, and whether the gateway generates a client key."""

from __future__ import annotations

import json

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


def redis_password(stack: LoadedStack) -> pulumi.Output[str]:
    """`redisPassword`, or a generated one (secret in state)."""
    password = stack.secrets.get("redisPassword")
    if password is not None:
        return password
    return random.RandomPassword("redis-password", length=40, special=False).result


def weaviate_keys(stack: LoadedStack) -> tuple[pulumi.Output[str], list[str]]:
    """`weaviateApiKeys` (secret JSON) and its users, or one generated admin key (stack output
    `weaviateAdminKey`): never anonymous access."""
    keys = stack.secrets.get("weaviateApiKeys")
    if keys is not None:
        return keys, stack.weaviate_users
    generated = random.RandomPassword("weaviate-admin-key", length=40, special=False).result
    pulumi.export("weaviateAdminKey", generated)
    return pulumi.Output.secret(generated.apply(lambda key: json.dumps({"admin": key}))), ["admin"]
