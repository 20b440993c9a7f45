"""The policies of the pack, importable (building a `PolicyPack` starts its gRPC server and
blocks, so only `__main__.py` does that)."""

from __future__ import annotations

from pulumi_policy import Policy

from policy.checklist import RESOURCE_POLICIES, STACK_POLICIES
from policy.hardening import HARDENING_POLICIES, HARDENING_STACK_POLICIES
from policy.kubernetes import KUBERNETES_POLICIES

POLICIES: list[Policy] = [
    *RESOURCE_POLICIES,
    *HARDENING_POLICIES,
    *KUBERNETES_POLICIES,
    *STACK_POLICIES,
    *HARDENING_STACK_POLICIES,
]
