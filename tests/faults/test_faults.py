"""The short fault suite CI runs: gateway kill, Kafka stall 6 s, notifier kill, Redis FLUSHALL,
the scaled-out kills (3 gateways, 2 of each service, one of each SIGKILLed in turn) and the
broker kill (one of three brokers, the active controller, SIGKILLed and restarted, on the
three-broker fault cluster), 40 students, each on a fresh system of processes on the fault
instance (about 4 minutes).

The long suite is ``python -m tests.faults`` (docs/faults.md). Every property of issue 9 is
asserted: no acknowledged event missing from the log, no duplicate id that a client did not
resend, every view (proctors, Redis, DynamoDB, a fresh snapshot) equal to the log's fold,
no offline verdict for a student whose socket stayed open, exactly one for each who left,
every event acknowledged again; for the broker kill also no gap between acknowledgements
above its bound (8 s) and the restarted broker back in every ISR within 60 s.
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
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    fault = FAULTS[name]
    # The instance the fault runs on: the three-broker cluster for broker-kill.
    infra: FaultInfra = request.getfixturevalue(
        "fault_cluster" if fault.brokers > 1 else "fault_infra"
    )
    source = os.environ.get("PROCTOR_FAULTS_SOURCE")
    run = FaultRun(
        fault,
        CI,
        infra,
        log_root=tmp_path,
        source=Path(source) if source else None,
        say=lambda line: None,
    )
    row = await run.run()
    assert not row["violations"], (
        f"{name}: " + "; ".join(row["violations"]) + f"\n{markdown([row])}logs: {tmp_path}"
    )
