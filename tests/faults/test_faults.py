"""The short fault suite CI runs: gateway kill, Kafka stall 6 s, notifier kill, Redis FLUSHALL
and the scaled-out kills (3 gateways, 2 of each service, one of each SIGKILLed in turn), 40
students, each on a fresh system of processes on the fault instance (about 3 minutes).

The long suite is ``python -m tests.faults`` (docs/faults.md). Every property of issue 9 is
asserted: no acknowledged event missing from the log, no duplicate id that a client did not
resend, every view (proctors, Redis, DynamoDB, a fresh snapshot) equal to the log's fold,
no offline verdict for a student whose socket stayed open, exactly one for each who left,
every event acknowledged again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.harness import CI, CI_SUITE, FAULTS, FaultRun
from tests.faults.infra import FaultInfra
from tests.faults.report import markdown

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(240)]


@pytest.mark.parametrize("name", CI_SUITE)
async def test_properties_hold_through_the_fault(
    name: str, fault_infra: FaultInfra, tmp_path: Path
) -> None:
    source = os.environ.get("PROCTOR_FAULTS_SOURCE")
    run = FaultRun(
        FAULTS[name],
        CI,
        fault_infra,
        log_root=tmp_path,
        source=Path(source) if source else None,
        say=lambda line: None,
    )
    row = await run.run()
    assert not row["violations"], (
        f"{name}: " + "; ".join(row["violations"]) + f"\n{markdown([row])}logs: {tmp_path}"
    )
