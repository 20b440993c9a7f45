from __future__ import annotations

import pytest

from tools.synth import Synth, synth_stack


@pytest.fixture(scope="session")
def dev() -> Synth:
    return synth_stack("dev")


@pytest.fixture(scope="session")
def prod() -> Synth:
    return synth_stack("prod")


@pytest.fixture(scope="session")
def k8s() -> Synth:
    return synth_stack("k8s")
