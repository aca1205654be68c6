"""Topic specifications and their creation: the one place partitions and retention are set."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import InvalidPartitionsError, TopicAlreadyExistsError, for_code

from adapters.kafka_security import client_kwargs
from adapters.settings import KafkaSettings


class TopicsNotCreated(Exception):
    """The broker refused to create a topic the services need (the message says why)."""


class PartitionsMismatch(Exception):
    """The event log has another number of partitions than the settings say.

    Every service reckons with the setting: a gateway's exam view waits for a position on each
    partition, the notifier reads ``range(events_partitions)``, the status service claims a
    rebuild of each. A log with more partitions than the setting would have some never read,
    one with fewer would leave views waiting forever, both without an error. So a service
    refuses to start instead, and the message names the setting to fix.
    """


def dead_letter_topic(topic: str) -> str:
    """Where consumers of ``topic`` put aside records they cannot apply."""
    return f"{topic}.dead-letters"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(kafka: KafkaSettings) -> list[TopicSpec]:
    """Every topic the services use, with its partitions and configs. Each carries
    ``min.insync.replicas`` for the settings' replication factor (2 of 3 on a cluster): with
    the producers' acks=all, an acknowledged record is then on at least that many brokers."""
    durability = {"min.insync.replicas": str(kafka.topic_min_insync_replicas)}
    specs = [
        TopicSpec(
            kafka.events_topic,
            kafka.events_partitions,
            {"cleanup.policy": "delete", "retention.ms": str(kafka.events_retention_ms)},
        ),
        # One partition keeps a gateway's records in order with its GatewayUp; presence
        # changes at connection churn rate, far below one partition's capacity.
        TopicSpec(
            kafka.presence_topic,
            1,
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
        ),
        # Partitioned by attempt (heartbeat_partition): the notifiers divide them.
        TopicSpec(
            kafka.heartbeats_topic,
            kafka.heartbeats_partitions,
            {"cleanup.policy": "delete", "retention.ms": str(kafka.heartbeats_retention_ms)},
        ),
        TopicSpec(
            kafka.deliveries_topic,
            kafka.deliveries_partitions,
            {"cleanup.policy": "delete", "retention.ms": str(kafka.deliveries_retention_ms)},
        ),
        # Log records a consumer could not apply (adapters/dead_letters.py). Rare, and each
        # one needs a person: kept as long as the log itself, one partition is plenty.
        TopicSpec(
            dead_letter_topic(kafka.events_topic),
            1,
            {"cleanup.policy": "delete", "retention.ms": str(kafka.events_retention_ms)},
        ),
    ]
    return [TopicSpec(s.name, s.partitions, {**s.config, **durability}) for s in specs]


@asynccontextmanager
async def _admin(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client, started and closed, with its work bounded like its start."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap,
        **client_kwargs(kafka),
        request_timeout_ms=int(kafka.request_timeout_s * 1000),
    )
    async with asyncio.timeout(kafka.request_timeout_s * 3):
        await admin.start()
    try:
        async with asyncio.timeout(kafka.request_timeout_s * 3):
            yield admin
    finally:
        await admin.close()


def check_events_partitions(kafka: KafkaSettings, found: int) -> None:
    """Raise ``PartitionsMismatch`` unless the event log's ``found`` partitions (0: no log
    yet, created with the setting) are what the settings say."""
    if found and found != kafka.events_partitions:
        raise PartitionsMismatch(
            f"{kafka.events_topic} has {found} partitions but PROCTOR_KAFKA__EVENTS_PARTITIONS"
            f" is {kafka.events_partitions}: the setting must match the log, whose partitions"
            f" are fixed for its life; set it to {found}"
        )


def gateway_slots(kafka: KafkaSettings, found: int) -> int:
    """How many gateway slots the deliveries topic's ``found`` partitions make: one each, and
    the setting's count while the topic does not exist yet (``found`` 0)."""
    return found or kafka.deliveries_partitions


def check_gateway_slot(kafka: KafkaSettings, slot: int, found: int) -> None:
    """Raise ``PartitionsMismatch`` unless the deliveries topic's ``found`` partitions include
    the gateway's ``slot``, its inbox."""
    have = gateway_slots(kafka, found)
    if slot >= have:
        raise PartitionsMismatch(
            f"gateway slot {slot} has no inbox: {kafka.deliveries_topic} has {have} partitions,"
            f" one per gateway slot (PROCTOR_KAFKA__DELIVERIES_PARTITIONS); give this gateway"
            f" a slot below {have} (PROCTOR_GATEWAY__SLOT)"
        )


async def verify_partitions(kafka: KafkaSettings, *, gateway_slot: int | None = None) -> None:
    """Refuse settings whose partition count the existing event log does not have, and a
    ``gateway_slot`` the deliveries topic has no partition for."""
    async with _admin(kafka) as admin:
        await _verify_partitions(admin, kafka)
        if gateway_slot is not None:
            found = await _count(admin, kafka.deliveries_topic)
            check_gateway_slot(kafka, gateway_slot, found)


async def _verify_partitions(admin: AIOKafkaAdminClient, kafka: KafkaSettings) -> None:
    check_events_partitions(kafka, await _count(admin, kafka.events_topic))


async def _count(admin: AIOKafkaAdminClient, topic: str) -> int:
    described = await admin.describe_topics([topic])
    return sum(len(d["partitions"]) for d in described if d["error_code"] == 0)


async def ensure_topics(kafka: KafkaSettings) -> list[str]:
    """Create missing topics; return the names created. Existing topics are left as they are,
    except that the heartbeat topic grows to its setting; an event log whose partitions are
    not the setting's is refused (``PartitionsMismatch``) before anything is created."""
    async with _admin(kafka) as admin:
        existing = set(await admin.list_topics())
        if kafka.events_topic in existing:
            await _verify_partitions(admin, kafka)
        missing = [spec for spec in topic_specs(kafka) if spec.name not in existing]
        for spec in missing:
            try:
                response = await admin.create_topics(
                    [
                        NewTopic(
                            spec.name,
                            spec.partitions,
                            kafka.replication_factor,
                            topic_configs=spec.config,
                        )
                    ]
                )
            except TopicAlreadyExistsError:
                continue
            # The broker answers per topic: a refusal (no Create ACL, a replication factor
            # above the brokers) comes back as an error code, not an exception.
            for topic, code, *message in response.topic_errors:
                if code not in (0, TopicAlreadyExistsError.errno):
                    error = for_code(code)
                    detail = message[0] if message and message[0] else error.description
                    raise TopicsNotCreated(f"{topic}: {error.__name__}: {detail}")
        if kafka.heartbeats_topic in existing:
            await _grow_heartbeats(admin, kafka)
    return [spec.name for spec in missing]


async def _grow_heartbeats(admin: AIOKafkaAdminClient, kafka: KafkaSettings) -> None:
    """Give the heartbeat topic the partitions the settings ask for (more notifiers to share
    the liveness work). Only this topic grows on its own: its records are transient and sent
    to explicit partitions, while a keyed topic would scatter its keys' order."""
    have = await _count(admin, kafka.heartbeats_topic)
    if 0 < have < kafka.heartbeats_partitions:
        with contextlib.suppress(InvalidPartitionsError):  # another process grew it first
            await admin.create_partitions(
                {kafka.heartbeats_topic: NewPartitions(kafka.heartbeats_partitions)}
            )


async def partition_count(kafka: KafkaSettings, topic: str) -> int:
    """How many partitions ``topic`` has (0 if it does not exist)."""
    async with _admin(kafka) as admin:
        return await _count(admin, topic)


async def delete_topics(kafka: KafkaSettings) -> None:
    """Delete the topics these settings name (tests and benchmarks clean up after
    themselves: thousands of leftover partitions slow a single broker down)."""
    async with _admin(kafka) as admin:
        existing = set(await admin.list_topics())
        doomed = [spec.name for spec in topic_specs(kafka) if spec.name in existing]
        if doomed:
            await admin.delete_topics(doomed)
