"""The fault suite's own infrastructure instance for the CI version (``test_faults.py``).

It is never the shared stack: ``FaultInfra`` refuses the default ports and directory. The
instance is started for the module if it is not running, and stopped again afterwards only
if this module started it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.faults.infra import FaultInfra


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "faults: kills, stalls and flushes infrastructure; runs on its own instance (tests/faults)",
    )


@pytest.fixture(scope="module")
def fault_infra() -> Iterator[FaultInfra]:
    if os.environ.get("PROCTOR_INFRA") == "testcontainers":
        pytest.skip("the fault suite signals local processes; it runs on infra/stack only")
    infra = FaultInfra.from_env()
    was_running = infra.running()
    infra.up()
    try:
        yield infra
    finally:
        infra.resume_all()
        if not was_running:
            infra.down()
