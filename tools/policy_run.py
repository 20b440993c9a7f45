"""`make policy STACK=<name>`: the policy pack over what the program registers, without the CLI.

The program runs under the SDK's mock runtime (the same path as `make render`); every policy of
the pack then sees each registered resource, and the stack policies the whole set, as the
analyzer would hand them over: inputs as props, unknown values raising UnknownValueError on
access, `not_applicable` honoured. Enforcement levels come from `policy/config/<stack>.json` (the
file `pulumi preview --policy-pack-config` takes); a level other than mandatory needs a
`justification` there. Exit code 1 on any mandatory violation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from policy.pack import POLICIES
from stacks.errors import ConfigError
from tools.synth import Synth, synth_stack

CONFIG_DIR = Path(__file__).with_name("config")
UNKNOWN_IN_SYNTH = "[unknown]"


class NotApplicableError(Exception):
    """A policy called `args.not_applicable(...)`: it does not apply to what it was handed."""


# pulumi_policy's args raise the SDK's private `_NotApplicableError` (pulumi_policy/policy.py),
# which it does not export; the runner hands policies these subclasses, whose `not_applicable`
# raises a public error of ours instead. The pack's validations are synchronous, so the SDK's
# wrapping of errors from awaited validations never sees it.
class _ResourceArgs(ResourceValidationArgs):
    def not_applicable(self, reason: str | None = None) -> None:
        raise NotApplicableError(reason)


class _StackArgs(StackValidationArgs):
    def not_applicable(self, reason: str | None = None) -> None:
        raise NotApplicableError(reason)


@dataclass(frozen=True)
class Finding:
    policy: str
    severity: str
    enforcement: str
    resource: str | None
    message: str


def load_config(stack: str) -> dict[str, dict[str, Any]]:
    """Per-policy config for `stack`; every relaxation below mandatory must say why."""
    path = CONFIG_DIR / f"{stack}.json"
    config: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}
    names = {p.name for p in POLICIES}
    for name, entry in config.items():
        if name not in names:
            raise ValueError(f"{path}: no policy named {name!r} (policies: {', '.join(sorted(names))})")
        level = entry.get("enforcementLevel", "mandatory")
        if level != "mandatory" and not str(entry.get("justification", "")).strip():
            raise ValueError(f"{path}: {name} is relaxed to {level} without a `justification`")
    return config


def _props(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _props(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_props(v) for v in value]
    return UNKNOWN_STRING_VALUE if value == UNKNOWN_IN_SYNTH else value


def _options(parent: str | None) -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], parent)


def _resources(synth: Synth) -> list[PolicyResource]:
    return [
        PolicyResource(
            r["type"],
            unknown_checking_proxy(_props(r["inputs"])),
            f"urn:pulumi:synth::inference-stack::{r['type']}::{r['name']}",
            r["name"],
            _options(r["parent"]),
            None,
            None,
            [],
            {},
        )
        for r in synth.resources
    ]


def _violations(policy: Any, resources: list[PolicyResource], config: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(resource name or None for the stack, message) for every violation `policy` reports."""
    found: list[tuple[str | None, str]] = []
    names = {r.urn: r.name for r in resources}
    if isinstance(policy, ResourceValidationPolicy):
        for r in resources:
            args = _ResourceArgs(r.resource_type, r.props, r.urn, r.name, r.opts, None, config)

            def on_resource(message: str, urn: str | None = None, name: str = r.name) -> None:
                found.append((name, message))

            with contextlib.suppress(UnknownValueError, NotApplicableError):
                policy.validate(args, on_resource)
    elif isinstance(policy, StackValidationPolicy):

        def on_stack(message: str, urn: str | None = None) -> None:
            found.append((names.get(urn) if urn else None, message))

        with contextlib.suppress(UnknownValueError, NotApplicableError):
            policy.validate(_StackArgs(resources, config), on_stack)
    return found


def evaluate(synth: Synth, config: dict[str, dict[str, Any]]) -> list[Finding]:
    """Every violation of every enabled policy, with its severity and enforcement level."""
    resources = _resources(synth)
    findings = []
    for policy in POLICIES:
        entry = config.get(policy.name, {})
        default = policy.enforcement_level or EnforcementLevel.MANDATORY
        enforcement = str(entry.get("enforcementLevel", default.value))
        if enforcement == EnforcementLevel.DISABLED.value:
            continue
        severity = policy.severity.value if policy.severity else "medium"
        policy_config = {k: v for k, v in entry.items() if k != "enforcementLevel"}
        for resource, message in _violations(policy, resources, policy_config):
            findings.append(Finding(policy.name, severity, enforcement, resource, message))
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--stack-file", type=Path, help="default: Pulumi.<stack>.yaml")
    args = parser.parse_args(argv)
    try:
        synth = synth_stack(args.stack, args.stack_file)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    findings = evaluate(synth, load_config(args.stack))
    order = ["critical", "high", "medium", "low"]
    for severity in order:
        group = [f for f in findings if f.severity == severity]
        if group:
            print(f"{severity.upper()} ({len(group)})")
            for f in group:
                print(f"  [{f.enforcement}] {f.policy}: {f.resource or 'stack'}: {f.message}")
    mandatory = [f for f in findings if f.enforcement == "mandatory"]
    print(f"{len(findings)} violation(s), {len(mandatory)} mandatory, stack {args.stack!r}")
    return 1 if mandatory else 0


if __name__ == "__main__":
    sys.exit(main())
