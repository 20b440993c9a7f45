"""The Kubernetes target's manifests against the official OpenAPI schemas (PyPI
`kubernetes-validate`, strict: an unknown or misspelt field fails), for the oldest and the newest
release the project supports."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from components.kubernetes import manifests
from components.observability.prometheus import render_rules
from stacks.config import SloConfig
from tests.support import crds

SELECTOR = manifests.labels("k8s", "worker", "chat")


def validate(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


def shipped() -> list[dict[str, Any]]:
    return [
        manifests.namespace("inference", "k8s"),
        manifests.disruption_budget("chat", "inference", SELECTOR, replicas=3, max_unavailable=1),
    ]


@pytest.mark.parametrize("version", manifests.SUPPORTED_VERSIONS)
def test_every_manifest_passes_the_official_schema_strictly(version: str) -> None:
    for obj in shipped():
        validate(obj, version)


@pytest.mark.parametrize("version", manifests.SUPPORTED_VERSIONS)
def test_the_check_catches_a_misspelt_field(version: str) -> None:
    """The control: strict validation is what would catch a renderer's typo."""
    broken = manifests.disruption_budget("chat", "inference", SELECTOR, replicas=3, max_unavailable=1)
    broken["spec"]["maxUnavailble"] = broken["spec"].pop("maxUnavailable")
    with pytest.raises(kubernetes_validate.ValidationError, match="maxUnavailble"):
        validate(broken, version)


def test_the_namespace_enforces_baseline_pod_security_and_warns_restricted() -> None:
    labels = manifests.namespace("inference", "k8s")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"


@pytest.mark.parametrize(("replicas", "unavailable", "says"), [(3, 0, "blocks every drain"), (2, 2, "whole group")])
def test_a_budget_that_blocks_drains_or_allows_all_is_refused(replicas: int, unavailable: int, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        manifests.disruption_budget("chat", "inference", SELECTOR, replicas, unavailable)


# --- custom resources, against their vendored CRDs (tests/fixtures/crds/README.md) ----------------


def custom() -> list[dict[str, Any]]:
    return [
        manifests.prometheus_rule("inference", "inference", "k8s", SloConfig()),
        manifests.scaled_object(
            "chat", "inference", "k8s", "http://prometheus:9090", "smollm2-135m", replicas=(1, 4), waiting=4
        ),
    ]


def test_custom_resources_pass_their_crd_schemas() -> None:
    for obj in custom():
        crds.validate(obj)


def test_the_crd_check_catches_a_misspelt_field() -> None:
    broken = custom()[1]
    broken["spec"]["maxReplicas"] = broken["spec"].pop("maxReplicaCount")
    with pytest.raises(jsonschema.ValidationError, match="maxReplicas"):
        crds.validate(broken)


def test_the_prometheus_rule_holds_the_docker_targets_rules_file() -> None:
    """Reused, not copied: the same groups Prometheus loads from its rules file on Docker hosts."""
    rule = manifests.prometheus_rule("inference", "inference", "k8s", SloConfig())
    assert {"groups": rule["spec"]["groups"]} == yaml.safe_load(render_rules(SloConfig()))


def test_a_scaled_object_with_its_bounds_crossed_is_refused() -> None:
    with pytest.raises(ValueError, match="at most the maximum"):
        manifests.scaled_object("chat", "inference", "k8s", "http://p:9090", "m", replicas=(5, 2), waiting=4)
