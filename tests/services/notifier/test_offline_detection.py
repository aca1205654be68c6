"""Offline detection end to end: a gateway double writes presence and heartbeats to the real
Kafka, the notifier runs in-process, and the exam log is read back. The latency budgets are
the product's requirements (docs/architecture.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import ClientSession

from schemas.events import AlertRaised, ExamEvent, StudentBackOnline, StudentOffline
from tests.conftest import scaled
from tests.services.notifier.conftest import Notifiers
from tests.services.notifier.doubles import GatewayDouble, LogWatcher

pytestmark = pytest.mark.integration

MakeGateway = Callable[[int], Awaitable[GatewayDouble]]


def offline_of(attempt: str) -> Callable[[ExamEvent], bool]:
    return lambda e: isinstance(e, StudentOffline) and e.attempt == attempt


async def test_clean_close_is_offline_within_one_second(
    notifiers: Notifiers, gateways: MakeGateway, log: LogWatcher
) -> None:
    notifier = await notifiers.start()
    gateway = await gateways(0)
    student = await gateway.connect("att-close")
    await asyncio.sleep(0.3)
    closed_at = await gateway.close(student, "client_closed")
    event, arrived = await log.wait_for(offline_of("att-close"), scaled(5))
    assert isinstance(event, StudentOffline)
    assert (event.reason, event.since, event.student) == ("closed", closed_at, "stu-att-close")
    assert event.source.kind == "notifier"
    assert arrived - closed_at <= 1_000, f"offline(closed) took {arrived - closed_at} ms"
    # The offline event also raises an offline alert, and the metrics count it.
    alert, _ = await log.wait_for(
        lambda e: isinstance(e, AlertRaised) and e.attempt == "att-close", scaled(5)
    )
    assert isinstance(alert, AlertRaised) and alert.kind == "offline"
    async with ClientSession() as http:
        # The alert is counted once its write is acknowledged, which the log watcher can
        # beat by a moment: read the metrics until the count is there (or time runs out).
        deadline = asyncio.get_running_loop().time() + scaled(5)
        while True:
            async with http.get(f"http://127.0.0.1:{notifier.ops_port}/metrics") as response:
                metrics = await response.text()
            counted = 'notifier_alerts_total{kind="offline"} 1.0' in metrics
            if counted or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        async with http.get(f"http://127.0.0.1:{notifier.ops_port}/readyz") as response:
            assert response.status == 200
    assert 'notifier_offline_events_total{reason="closed"} 1.0' in metrics
    assert 'notifier_alerts_total{kind="offline"} 1.0' in metrics
    assert 'notifier_detection_lag_seconds_count{reason="closed"} 1.0' in metrics


async def test_superseded_connection_is_not_offline(
    notifiers: Notifiers, gateways: MakeGateway, log: LogWatcher
) -> None:
    await notifiers.start()
    first, second = await gateways(0), await gateways(1)
    old = await first.connect("att-moved")
    await asyncio.sleep(0.3)
    await second.connect("att-moved")
    await first.close(old, "superseded")
    # A real close on another attempt, written after: once it shows, the first was decided.
    other = await first.connect("att-other")
    await first.close(other, "client_closed")
    await log.wait_for(offline_of("att-other"), scaled(5))
    await asyncio.sleep(scaled(1))
    assert log.matching(offline_of("att-moved")) == []


async def test_silent_loss_is_heartbeat_timeout_within_two_intervals_plus_one_second(
    notifiers: Notifiers, gateways: MakeGateway, log: LogWatcher
) -> None:
    await notifiers.start()
    gateway = await gateways(0)
    lost = await gateway.connect("att-silent", interval_s=1.0)
    await gateway.connect("att-fine", interval_s=1.0)
    await asyncio.sleep(2.5)
    await lost.go_silent()
    event, arrived = await log.wait_for(offline_of("att-silent"), scaled(10))
    assert isinstance(event, StudentOffline)
    assert (event.reason, event.since) == ("heartbeat_timeout", lost.last_beat_ms)
    budget = 2 * 1_000 + 1_000
    assert arrived - lost.last_beat_ms <= budget, f"took {arrived - lost.last_beat_ms} ms"
    await asyncio.sleep(1)
    assert log.matching(offline_of("att-fine")) == []


async def test_crashed_gateway_is_gateway_lost_within_ten_seconds(
    notifiers: Notifiers, gateways: MakeGateway, log: LogWatcher
) -> None:
    await notifiers.start()
    doomed, healthy = await gateways(0), await gateways(1)
    victims = [await doomed.connect(f"att-crash-{i}", interval_s=5.0) for i in range(3)]
    survivor = await healthy.connect("att-survivor", interval_s=5.0)
    await asyncio.sleep(1.5)
    await doomed.crash()
    last_batch = doomed.last_batch_ms
    for victim in victims:
        event, arrived = await log.wait_for(offline_of(victim.attempt), scaled(12))
        assert isinstance(event, StudentOffline) and event.reason == "gateway_lost"
        assert event.since == victim.last_beat_ms
        assert arrived - last_batch <= 10_000, f"took {arrived - last_batch} ms"
    assert log.matching(offline_of(survivor.attempt)) == []


async def test_reconnect_after_offline_is_back_online_with_the_offline_duration(
    notifiers: Notifiers, gateways: MakeGateway, log: LogWatcher
) -> None:
    await notifiers.start()
    gateway = await gateways(0)
    student = await gateway.connect("att-back")
    closed_at = await gateway.close(student, "error")
    await log.wait_for(offline_of("att-back"), scaled(5))
    await asyncio.sleep(0.7)
    again = await gateway.connect("att-back")
    event, arrived = await log.wait_for(
        lambda e: isinstance(e, StudentBackOnline) and e.attempt == "att-back", scaled(5)
    )
    assert isinstance(event, StudentBackOnline)
    assert event.reason == "closed"
    assert event.offline_ms == again.opened_at - closed_at
    assert 700 <= event.offline_ms < 5_000
    assert arrived - again.opened_at <= 1_000


async def test_server_shutdown_waits_for_the_reconnect_grace(
    notifiers: Notifiers, gateways: MakeGateway, log: LogWatcher
) -> None:
    await notifiers.start()  # reconnect grace: 1 s in these tests
    old, new = await gateways(0), await gateways(1)
    returning = await old.connect("att-returns")
    leaving = await old.connect("att-leaves")
    await old.close(returning, "server_shutdown")
    closed_at = await old.close(leaving, "server_shutdown")
    await new.connect("att-returns")
    event, arrived = await log.wait_for(offline_of("att-leaves"), scaled(5))
    assert isinstance(event, StudentOffline)
    assert (event.reason, event.since) == ("closed", closed_at)
    assert arrived - closed_at >= 1_000
    assert log.matching(offline_of("att-returns")) == []
