"""Topic creation on the real Kafka: the heartbeat topic grows to the partitions the settings
ask for (more notifiers can then share the liveness work); the keyed topics never do."""

from __future__ import annotations

import asyncio

import pytest

from adapters.kafka_topics import TopicsNotCreated, delete_topics, ensure_topics, partition_count
from adapters.settings import CommonSettings, KafkaSettings
from tests.conftest import unique

pytestmark = pytest.mark.integration


async def settled_count(kafka: KafkaSettings, topic: str, expected: int) -> int:
    """The count once the broker's metadata shows the change (it can lag a moment)."""
    for _ in range(50):
        if (count := await partition_count(kafka, topic)) == expected:
            break
        await asyncio.sleep(0.1)
    return count


async def test_the_heartbeat_topic_grows_and_the_log_does_not(infra: CommonSettings) -> None:
    kafka = KafkaSettings.for_run(
        unique("t"),
        bootstrap=infra.kafka.bootstrap,
        events_partitions=2,
        deliveries_partitions=2,
        heartbeats_partitions=1,
    )
    try:
        assert kafka.heartbeats_topic in await ensure_topics(kafka)
        grown = kafka.model_copy(update={"heartbeats_partitions": 3, "events_partitions": 4})
        assert await ensure_topics(grown) == []  # nothing created, one topic grown
        assert await settled_count(kafka, kafka.heartbeats_topic, 3) == 3
        assert await partition_count(kafka, kafka.events_topic) == 2
        # Asking for fewer never shrinks it.
        await ensure_topics(kafka)
        assert await partition_count(kafka, kafka.heartbeats_topic) == 3
    finally:
        await delete_topics(kafka)


async def test_a_topic_the_broker_refuses_is_an_error_not_a_creation(
    infra: CommonSettings,
) -> None:
    """A replication factor above the broker count: refused per topic, never reported made."""
    kafka = KafkaSettings.for_run(
        unique("t"), bootstrap=infra.kafka.bootstrap, replication_factor=3
    )
    with pytest.raises(TopicsNotCreated, match="InvalidReplicationFactor"):
        await ensure_topics(kafka)
    assert await partition_count(kafka, kafka.events_topic) == 0
