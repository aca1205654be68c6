"""Notifiers share the attempts by heartbeat partition: two notifiers split four partitions,
each attempt is judged by exactly one of them, and when one leaves (a rebalance) the other
takes its partitions and every verdict still comes exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest

from adapters.kafka_clients import durable_producer
from adapters.settings import CommonSettings
from domain.alerts import AlertThresholds
from schemas.events import ExamEvent, StudentOffline
from schemas.presence import heartbeat_partition
from services.notifier.runtime import Notifier
from services.notifier.settings import NotifierOptions, NotifierSettings
from tests.conftest import fresh_run, scaled, unique
from tests.services.notifier.conftest import Notifiers
from tests.services.notifier.doubles import GatewayDouble, LogWatcher

pytestmark = pytest.mark.integration

PARTITIONS = 4


@pytest.fixture
async def sharded(infra: CommonSettings) -> AsyncIterator[NotifierSettings]:
    async with fresh_run(infra, heartbeats_partitions=PARTITIONS) as fresh:
        yield NotifierSettings(
            **fresh.model_dump(),
            notifier=NotifierOptions(
                group_id=unique("notifier"),
                gateway_timeout_s=3.0,
                reconnect_grace_s=1.0,
                alerts=AlertThresholds(away_threshold_s=60.0),
                ops_port=0,
            ),
        )


def offline(event: ExamEvent) -> bool:
    return isinstance(event, StudentOffline)


def offline_of(attempt: str) -> Callable[[ExamEvent], bool]:
    return lambda e: isinstance(e, StudentOffline) and e.attempt == attempt


def owned(notifier: Notifier) -> set[int]:
    assert notifier._liveness is not None
    return set(notifier._liveness.shards)


async def until(condition: Callable[[], bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.1)


async def test_two_notifiers_split_the_partitions_and_judge_each_attempt_once(
    sharded: NotifierSettings,
) -> None:
    notifiers = Notifiers(sharded)
    log = LogWatcher(sharded.kafka)
    producer = durable_producer(sharded.kafka, client_id="test-gateway-double")
    await log.start()
    await producer.start()
    gateway = GatewayDouble(producer, sharded.kafka, 0)
    try:
        first = await notifiers.start()
        second = await notifiers.start()
        # The group settles on a split: every partition judged, by one notifier only.
        await until(
            lambda: (
                owned(first) | owned(second) == set(range(PARTITIONS))
                and not owned(first) & owned(second)
                and bool(owned(first))
                and bool(owned(second))
            ),
            scaled(30),
        )
        await gateway.up()
        students = [await gateway.connect(f"att-share-{i}", interval_s=1.0) for i in range(16)]
        spread = Counter(heartbeat_partition(s.attempt, PARTITIONS) for s in students)
        assert len(spread) == PARTITIONS, spread  # every partition has students
        await asyncio.sleep(2.5)

        # Half go silent, a quarter close their tab, a quarter stay: while both run.
        silent, closed = students[0:8:2], students[1:8:2]
        for student in silent:
            await student.go_silent()
        for student in closed:
            await gateway.close(student, "client_closed")
        for student in [*silent, *closed]:
            await log.wait_for(offline_of(student.attempt), scaled(10))

        # One notifier leaves: the other takes its partitions, rebuilt from presence.
        leaving = first if owned(first) else second
        staying = second if leaving is first else first
        await notifiers.stop(leaving)
        await until(lambda: owned(staying) == set(range(PARTITIONS)), scaled(30))
        later_silent, later_closed = students[8:16:2], students[9:16:2]
        for student in later_silent:
            await student.go_silent()
        for student in later_closed:
            await gateway.close(student, "client_closed")
        for student in [*later_silent, *later_closed]:
            await log.wait_for(offline_of(student.attempt), scaled(15))
        await asyncio.sleep(scaled(2))

        # Exactly one verdict per offline attempt, the right reason, none for anyone else.
        verdicts = Counter(e.attempt for e, _ in log.matching(offline))
        expected = {s.attempt for s in [*silent, *closed, *later_silent, *later_closed]}
        assert set(verdicts) == expected
        assert all(n == 1 for n in verdicts.values()), verdicts
        reasons = {
            e.attempt: e.reason for e, _ in log.matching(offline) if isinstance(e, StudentOffline)
        }
        assert {reasons[s.attempt] for s in [*silent, *later_silent]} == {"heartbeat_timeout"}
        assert {reasons[s.attempt] for s in [*closed, *later_closed]} == {"closed"}
    finally:
        await gateway.crash()
        await notifiers.stop_all()
        await producer.stop()
        await log.stop()
