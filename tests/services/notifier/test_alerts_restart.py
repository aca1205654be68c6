"""A notifier restart never writes an alert id twice, and a poison record never stops it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters.dead_letters import read_letters
from schemas.events import AlertRaised
from services.notifier.settings import NotifierSettings
from tests.conftest import scaled
from tests.services.notifier.conftest import Notifiers
from tests.services.notifier.doubles import GatewayDouble, LogWatcher
from tests.waiting import eventually

pytestmark = pytest.mark.integration

MakeGateway = Callable[[int], Awaitable[GatewayDouble]]


async def rewind_commits(settings: NotifierSettings) -> None:
    """Move the group's commit back to the start: a crash after the alerts were written but
    before their offsets were committed (the window the commit interval leaves open)."""
    kafka = settings.kafka
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        group_id=settings.notifier.group_id,
        enable_auto_commit=False,
    )
    async with asyncio.timeout(scaled(20)):
        await consumer.start()
        try:
            tps = [TopicPartition(kafka.events_topic, p) for p in range(kafka.events_partitions)]
            consumer.assign(tps)
            await consumer.commit({tp: 0 for tp in tps})
        finally:
            await consumer.stop()


async def test_alerts_written_after_the_last_commit_are_not_raised_again_on_restart(
    notifier_settings: NotifierSettings, gateways: MakeGateway, log: LogWatcher
) -> None:
    options = notifier_settings.notifier.model_copy(update={"commit_interval_s": 3600.0})
    settings = notifier_settings.model_copy(update={"notifier": options})
    notifiers = Notifiers(settings)
    try:
        first = await notifiers.start()
        gateway = await gateways(0)
        students = [await gateway.connect(f"att-{n}") for n in range(3)]
        for student in students:
            for _ in range(3):
                await gateway.status(student, "away")
                await gateway.status(student, "active")
        await gateway.close(students[0], "client_closed")  # an offline alert too
        await eventually(
            lambda: len(log.matching(lambda e: isinstance(e, AlertRaised))) >= 4,
            within_s=10,
            what="repeated_away for each student and offline for one",
        )
        await notifiers.stop(first)
        await rewind_commits(settings)
        await notifiers.start()
        await asyncio.sleep(3)
    finally:
        await notifiers.stop_all()
    ids = Counter(e.id for e, _ in log.matching(lambda e: isinstance(e, AlertRaised)))
    assert len(ids) >= 4
    assert [i for i, n in ids.items() if n > 1] == [], "an alert id written twice"


async def test_an_undecodable_record_is_put_aside_and_alerting_goes_on(
    notifier_settings: NotifierSettings, gateways: MakeGateway, producer: AIOKafkaProducer
) -> None:
    notifiers = Notifiers(notifier_settings)
    kafka = notifier_settings.kafka
    try:
        notifier = await notifiers.start()
        gateway = await gateways(0)
        student = await gateway.connect("att-x")
        poison = await producer.send_and_wait(
            kafka.events_topic, b'{"type": "student.status", "status": "asleep"}', key=b"att-x"
        )
        await gateway.status(student, "away")  # 1 s threshold in these tests

        async def alerted() -> bool:
            value = notifier.registry.get_sample_value(
                "notifier_alerts_total", {"kind": "away_too_long"}
            )
            return value == 1

        deadline = asyncio.get_running_loop().time() + scaled(10)
        while not await alerted():
            assert asyncio.get_running_loop().time() < deadline, "no alert after the poison"
            await asyncio.sleep(0.1)
        assert notifier.ready()
    finally:
        await notifiers.stop_all()
    letters = [
        letter
        for letter in await read_letters(kafka, kafka.events_topic)
        if letter.consumer == "notifier-alerts"
    ]
    assert [(letter.partition, letter.offset, letter.reason) for letter in letters] == [
        (poison.partition, poison.offset, "undecodable")
    ]
