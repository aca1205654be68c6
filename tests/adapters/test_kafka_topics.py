"""Topic creation on the real Kafka: the heartbeat topic grows to the partitions the settings
ask for (more notifiers can then share the liveness work); the keyed topics never do, and an
event log whose partitions are not the settings' is refused. Every topic carries the
min.insync.replicas that goes with its replication factor."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pydantic import ValidationError

from adapters.kafka_topics import (
    PartitionsMismatch,
    TopicsNotCreated,
    check_events_partitions,
    check_gateway_slot,
    delete_topics,
    ensure_topics,
    partition_count,
    topic_specs,
    verify_partitions,
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
        # An event log of other partitions is refused before anything changes.
        other_log = kafka.model_copy(update={"heartbeats_partitions": 3, "events_partitions": 4})
        with pytest.raises(PartitionsMismatch):
            await ensure_topics(other_log)
        assert await partition_count(kafka, kafka.heartbeats_topic) == 1
        grown = kafka.model_copy(update={"heartbeats_partitions": 3})
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


def test_a_log_of_other_partitions_is_refused_with_the_setting_to_fix() -> None:
    kafka = KafkaSettings(events_topic="exam.events", events_partitions=4)
    check_events_partitions(kafka, 4)
    check_events_partitions(kafka, 0)  # no log yet: it will be created with the setting
    for found in (1, 3, 12):
        with pytest.raises(PartitionsMismatch) as refused:
            check_events_partitions(kafka, found)
        message = str(refused.value)
        assert f"exam.events has {found} partitions" in message
        assert "PROCTOR_KAFKA__EVENTS_PARTITIONS is 4" in message
        assert f"set it to {found}" in message


@integration
async def test_services_settings_are_checked_against_the_real_log(infra: CommonSettings) -> None:
    kafka = KafkaSettings.for_run(
        unique("t"), bootstrap=infra.kafka.bootstrap, events_partitions=3, deliveries_partitions=1
    )
    await verify_partitions(kafka)  # no log yet: nothing to disagree with
    try:
        await ensure_topics(kafka)
        await verify_partitions(kafka)
        for wrong in (2, 12):
            with pytest.raises(PartitionsMismatch, match=f"has 3 partitions .* is {wrong}"):
                await verify_partitions(kafka.model_copy(update={"events_partitions": wrong}))
        assert await partition_count(kafka, kafka.events_topic) == 3
    finally:
        await delete_topics(kafka)


def test_a_gateway_slot_without_a_deliveries_partition_is_refused() -> None:
    kafka = KafkaSettings(deliveries_topic="proctor.deliveries", deliveries_partitions=32)
    check_gateway_slot(kafka, 3, 4)
    check_gateway_slot(kafka, 31, 0)  # no topic yet: it will have the setting's 32
    for slot, found in ((4, 4), (32, 0), (40, 32)):
        with pytest.raises(PartitionsMismatch) as refused:
            check_gateway_slot(kafka, slot, found)
        have = found or 32
        message = str(refused.value)
        assert f"gateway slot {slot} has no inbox: proctor.deliveries has {have}" in message
        assert f"a slot below {have}" in message
