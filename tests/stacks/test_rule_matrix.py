"""The refused-stack-file matrices, counted per class of bad input: a class that loses its cases
fails here, not silently."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tests.stacks import (
    test_config_rules,
    test_refused_numbers,
    test_refused_parsing,
    test_refused_ports,
    test_refused_secrets,
    test_refused_values,
)

# Class -> (its cases, the least it may have). Ids must be unique across every matrix.
CLASSES: dict[str, tuple[Sequence[tuple[Any, ...]], int]] = {
    "dangerous host paths": (test_refused_values.HOST_PATHS, 20),
    "numbers that contradict each other": (test_refused_numbers.CASES, 20),
    "model limits": (test_refused_numbers.MODEL_CASES, 5),
    "ports": (test_refused_ports.CASES, 10),
    "parsing": (test_refused_parsing.CASES, 15),
    "values handed to a shell, argv or another program": (
        test_refused_values.VERSIONS_AND_ADDRESSES
        + test_refused_values.IMAGES_AND_NAMES
        + test_refused_values.EXTRA_ARGS,
        40,
    ),
    "secrets": (test_refused_secrets.CASES, 20),
}


def test_every_class_keeps_its_cases() -> None:
    short = {name: len(cases) for name, (cases, least) in CLASSES.items() if len(cases) < least}
    assert not short, f"classes below their floor: {short}"


def test_case_ids_are_unique_across_the_matrices() -> None:
    ids = [case[0] for cases, _ in CLASSES.values() for case in cases]
    ids += [case[0] for case in test_config_rules.CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_at_least_60_cases_beyond_the_original_matrix() -> None:
    assert sum(len(cases) for cases, _ in CLASSES.values()) >= 60
