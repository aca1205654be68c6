"""The fault suite's own infrastructure instances for the CI version (``test_faults.py``).

They are never the shared stack: ``FaultInfra`` refuses the default ports and directory. An
instance is started for the module when a test first needs it (the three-broker cluster only
for broker-kill) if it is not running, and stopped again afterwards only if this module
started it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.faults.infra import FaultInfra


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "faults: kills, stalls and flushes infrastructure; runs on its own instance (tests/faults)",
    )


@pytest.fixture(scope="module")
def fault_infra() -> Iterator[FaultInfra]:
    yield from _instance(FaultInfra.from_env)


@pytest.fixture(scope="module")
def fault_cluster() -> Iterator[FaultInfra]:
    yield from _instance(FaultInfra.cluster_from_env)


def _instance(make: Callable[[], FaultInfra]) -> Iterator[FaultInfra]:
    if os.environ.get("PROCTOR_INFRA") == "testcontainers":
        pytest.skip("the fault suite signals local processes; it runs on infra/stack only")
    infra = make()
    was_running = infra.running()
    infra.up()
    try:
        yield infra
    finally:
        infra.resume_all()
        if not was_running:
            infra.down()
