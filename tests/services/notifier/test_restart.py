"""A notifier restart rebuilds from presence and raises no offline storm."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from schemas.events import StudentBackOnline, StudentOffline
from tests.conftest import scaled
from tests.services.notifier.conftest import Notifiers
from tests.services.notifier.doubles import GatewayDouble, LogWatcher

pytestmark = pytest.mark.integration

MakeGateway = Callable[[int], Awaitable[GatewayDouble]]


async def test_restart_while_students_keep_beating_raises_no_offline_events(
    notifiers: Notifiers, gateways: MakeGateway, log: LogWatcher
) -> None:
    first = await notifiers.start()
    gateway_a, gateway_b = await gateways(0), await gateways(1)
    students = [await gateway_a.connect(f"att-a{i}", interval_s=1.0) for i in range(5)]
    students += [await gateway_b.connect(f"att-b{i}", interval_s=1.0) for i in range(5)]
    leaver = students.pop()
    await asyncio.sleep(1.5)
    await gateway_b.close(leaver, "client_closed")
    await log.wait_for(lambda e: isinstance(e, StudentOffline), scaled(5))
    await notifiers.stop(first)
    # Down for longer than both the heartbeat and the gateway timeouts.
    await asyncio.sleep(4)
    await notifiers.start()
    await asyncio.sleep(5)
    offline = [e for e, _ in log.matching(lambda e: True) if isinstance(e, StudentOffline)]
    assert [(e.attempt, e.reason) for e in offline] == [(leaver.attempt, "closed")]
    assert log.matching(lambda e: isinstance(e, StudentBackOnline)) == []
    # The restarted notifier is live: it knows the leaver is offline, and sees a new loss.
    await gateway_b.connect(leaver.attempt, interval_s=1.0)
    await log.wait_for(lambda e: isinstance(e, StudentBackOnline), scaled(5))
    await students[0].go_silent()
    event, _ = await log.wait_for(
        lambda e: isinstance(e, StudentOffline) and e.attempt == students[0].attempt, scaled(5)
    )
    assert isinstance(event, StudentOffline) and event.reason == "heartbeat_timeout"
