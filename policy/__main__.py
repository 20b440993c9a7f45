"""The pack the Pulumi CLI runs: `pulumi preview --policy-pack policy [--policy-pack-config
policy/config/<stack>.json]`. Policies are mandatory unless a stack's config relaxes one."""

import sys
from pathlib import Path

# The CLI runs this file from policy/; the policies import the project's modules by package name.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.pack import POLICIES

PolicyPack(name="inference-stack", enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
