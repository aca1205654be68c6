"""Topic creation on the real Kafka: the heartbeat topic grows to the partitions the settings
ask for (more notifiers can then share the liveness work); the keyed topics never do. Every
topic carries the min.insync.replicas that goes with its replication factor."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pydantic import ValidationError

from adapters.kafka_topics import (
    TopicsNotCreated,
    delete_topics,
    ensure_topics,
    partition_count,
    topic_specs,
)
from adapters.settings import CommonSettings, KafkaSettings
from tests.conftest import unique

integration = pytest.mark.integration


@pytest.mark.parametrize(("replication", "min_isr"), [(1, "1"), (2, "1"), (3, "2"), (5, "2")])
def test_every_topic_carries_the_min_isr_of_its_replication(replication: int, min_isr: str) -> None:
    kafka = KafkaSettings(replication_factor=replication)
    specs = topic_specs(kafka)
    assert len(specs) == 5
    for spec in specs:
        assert spec.config["min.insync.replicas"] == min_isr, spec.name
    assert topic_specs(KafkaSettings())[0].config["cleanup.policy"] == "delete"


def test_min_isr_can_be_set_but_not_above_the_replication() -> None:
    kafka = KafkaSettings(replication_factor=3, min_insync_replicas=3)
    assert {s.config["min.insync.replicas"] for s in topic_specs(kafka)} == {"3"}
    with pytest.raises(ValidationError, match="MIN_INSYNC_REPLICAS=3 is above"):
        KafkaSettings(replication_factor=2, min_insync_replicas=3)


def test_min_isr_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCTOR_KAFKA__REPLICATION_FACTOR", "3")
    assert CommonSettings().kafka.topic_min_insync_replicas == 2
    monkeypatch.setenv("PROCTOR_KAFKA__MIN_INSYNC_REPLICAS", "1")
    assert CommonSettings().kafka.topic_min_insync_replicas == 1


async def topic_config(kafka: KafkaSettings, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    [resource] = response.to_object()["resources"]
    return {e["config_names"]: e["config_value"] for e in resource["config_entries"]}


@integration
async def test_created_topics_carry_their_min_isr(infra: CommonSettings) -> None:
    kafka = KafkaSettings.for_run(
        unique("t"), bootstrap=infra.kafka.bootstrap, events_partitions=1, deliveries_partitions=1
    )
    try:
        await ensure_topics(kafka)
        for spec in topic_specs(kafka):
            config = await topic_config(kafka, spec.name)
            assert config["min.insync.replicas"] == "1", spec.name
            assert config["cleanup.policy"] == spec.config["cleanup.policy"], spec.name
    finally:
        await delete_topics(kafka)


async def settled_count(kafka: KafkaSettings, topic: str, expected: int) -> int:
    """The count once the broker's metadata shows the change (it can lag a moment)."""
    for _ in range(50):
        if (count := await partition_count(kafka, topic)) == expected:
            break
        await asyncio.sleep(0.1)
    return count


@integration
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


@integration
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
