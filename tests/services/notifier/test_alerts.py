"""Alert rules end to end: status events in the real log, alerts read back from it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from domain.alerts import AlertThresholds
from schemas.events import AlertRaised, ExamEvent
from services.notifier.settings import NotifierSettings
from tests.conftest import scaled
from tests.services.notifier.conftest import Notifiers
from tests.services.notifier.doubles import GatewayDouble, LogWatcher

pytestmark = pytest.mark.integration

MakeGateway = Callable[[int], Awaitable[GatewayDouble]]


def alert_of(attempt: str, kind: str) -> Callable[[ExamEvent], bool]:
    return lambda e: isinstance(e, AlertRaised) and e.attempt == attempt and e.kind == kind


async def test_away_too_long_is_alerted_once(
    notifiers: Notifiers, gateways: MakeGateway, log: LogWatcher
) -> None:
    await notifiers.start()  # away threshold: 1 s in these tests
    gateway = await gateways(0)
    long_away = await gateway.connect("att-away")
    short_away = await gateway.connect("att-brief")
    away = await gateway.status(long_away, "away")
    await gateway.status(short_away, "away")
    await asyncio.sleep(0.3)
    await gateway.status(short_away, "active")
    alert, arrived = await log.wait_for(alert_of("att-away", "away_too_long"), scaled(5))
    assert isinstance(alert, AlertRaised)
    assert "away" in alert.detail and "stu-att-away" in alert.detail
    assert 1_000 <= arrived - away.ts <= 1_000 + 1_000
    await asyncio.sleep(1.5)
    assert len(log.matching(alert_of("att-away", "away_too_long"))) == 1
    assert log.matching(alert_of("att-brief", "away_too_long")) == []


async def test_repeated_away_and_alert_state_surviving_a_restart(
    notifier_settings: NotifierSettings, gateways: MakeGateway, log: LogWatcher
) -> None:
    options = notifier_settings.notifier.model_copy(
        update={"alerts": AlertThresholds(away_threshold_s=2.0)}
    )
    notifiers = Notifiers(notifier_settings.model_copy(update={"notifier": options}))
    try:
        first = await notifiers.start()
        gateway = await gateways(0)
        fidget = await gateway.connect("att-fidget")
        pending = await gateway.connect("att-pending")
        for _ in range(3):
            await gateway.status(fidget, "away")
            await gateway.status(fidget, "active")
        alert, _ = await log.wait_for(alert_of("att-fidget", "repeated_away"), scaled(5))
        assert isinstance(alert, AlertRaised) and "3 times within 10 min" in alert.detail
        await gateway.status(fidget, "away")
        await log.wait_for(alert_of("att-fidget", "away_too_long"), scaled(5))
        # Away just before the restart: its threshold passes while no notifier runs.
        pending_away = await gateway.status(pending, "away")
        await asyncio.sleep(0.5)
        await notifiers.stop(first)
        await notifiers.start()
        _, arrived = await log.wait_for(alert_of("att-pending", "away_too_long"), scaled(5))
        assert arrived >= pending_away.ts + 2_000
        await asyncio.sleep(1)
        # Still away, and more away episodes: the restarted rules remember what was raised.
        await gateway.status(fidget, "active")
        await gateway.status(fidget, "away")
        await asyncio.sleep(0.5)
        assert len(log.matching(alert_of("att-fidget", "repeated_away"))) == 1
        assert len(log.matching(alert_of("att-fidget", "away_too_long"))) == 1
        assert len(log.matching(alert_of("att-pending", "away_too_long"))) == 1
    finally:
        await notifiers.stop_all()


async def test_offsets_are_committed_on_the_interval_and_on_stop(
    notifier_settings: NotifierSettings, gateways: MakeGateway, log: LogWatcher
) -> None:
    # A commit per fetched batch cost a quarter of the notifier's CPU under load.
    options = notifier_settings.notifier.model_copy(update={"commit_interval_s": 3600.0})
    settings = notifier_settings.model_copy(update={"notifier": options})
    notifiers = Notifiers(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        first = await notifiers.start()
        gateway = await gateways(0)
        student = await gateway.connect("att-commit")
        for _ in range(3):
            await gateway.status(student, "away")
            await gateway.status(student, "active")
        await log.wait_for(alert_of("att-commit", "repeated_away"), scaled(5))

        async def committed() -> int:
            offsets = await admin.list_consumer_group_offsets(options.group_id)
            return sum(
                meta.offset
                for tp, meta in offsets.items()
                if tp.topic == settings.kafka.events_topic and meta.offset > 0
            )

        # The first batch after assignment commits (the interval starts at creation);
        # what follows waits for the interval.
        before = await committed()
        await gateway.status(student, "away")
        await gateway.status(student, "active")
        await asyncio.sleep(1.0)
        assert await committed() == before
        await notifiers.stop(first)
        assert await committed() >= before + 2
    finally:
        await notifiers.stop_all()
        await admin.close()
