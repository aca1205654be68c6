"""The gateway's liveness batches, split by heartbeat partition: each partition gets this
gateway's batch every interval (empty where it has no students, so its silence shows to that
partition's notifier), and each student's beats go to its own partition only."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
from aiokafka import TopicPartition

from adapters.kafka_clients import reader
from adapters.settings import CommonSettings
from schemas.presence import GatewayHeartbeat, decode_heartbeat, heartbeat_partition
from services.gateway.settings import GatewaySettings
from tests.conftest import fresh_run
from tests.services.gateway.conftest import Connect, student_token
from tests.services.gateway.test_publish import next_frame

pytestmark = pytest.mark.integration

PARTITIONS = 3


@pytest.fixture
async def settings(infra: CommonSettings) -> AsyncIterator[CommonSettings]:
    """The gateway fixture's settings, with a heartbeat topic of three partitions."""
    async with fresh_run(infra, heartbeats_partitions=PARTITIONS) as fresh:
        yield fresh


async def test_each_partition_gets_its_students_and_the_gateway_beat(
    gateway: tuple[GatewaySettings, object], connect: Connect
) -> None:
    settings, _ = gateway
    attempts = [f"att-hb-{i}" for i in range(6)]
    sockets = []
    for attempt in attempts:
        ws = await connect(student_token(attempt=attempt, student=f"stu-{attempt}"))
        await next_frame(ws, "welcome")
        await ws.send_str('{"type":"heartbeat"}')
        sockets.append(ws)
    await asyncio.sleep(2.5)  # two batch intervals

    consumer = reader(settings.kafka, client_id="test-heartbeats")
    await consumer.start()
    tps = [TopicPartition(settings.kafka.heartbeats_topic, p) for p in range(PARTITIONS)]
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        batches: dict[int, list[GatewayHeartbeat]] = defaultdict(list)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    beat = decode_heartbeat(record.value or b"")
                    assert isinstance(beat, GatewayHeartbeat)
                    batches[tp.partition].append(beat)
    finally:
        await consumer.stop()
        for ws in sockets:
            await ws.close()
    # Every partition hears from the gateway, with its students in it and nobody else's.
    assert set(batches) == set(range(PARTITIONS))
    seen: dict[str, int] = {}
    for partition, beats in batches.items():
        assert all(b.slot == settings.gateway.slot for b in beats)
        for beat in beats:
            for attempt in beat.students:
                assert heartbeat_partition(attempt, PARTITIONS) == partition, attempt
                seen[attempt] = partition
    assert set(seen) == set(attempts)
