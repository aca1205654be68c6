"""The audit tool's integration fixtures: a simulated exam written to the test's log topic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import pytest

from adapters.kafka_clients import durable_producer
from adapters.settings import CommonSettings
from audit.settings import AuditSettings, Settings
from schemas.events import ExamEvent, encode_event, log_key

# The status service's fixtures: the test's Redis snapshot and DynamoDB table (dropped after).
from tests.services.status.conftest import snapshots, table

__all__ = ["snapshots", "table"]


@dataclass(frozen=True)
class Sent:
    event: ExamEvent
    partition: int
    offset: int


async def write_log(settings: CommonSettings, events: Iterable[ExamEvent]) -> list[Sent]:
    """Write the events as the gateway does (key = attempt, record time = the event's ts)."""
    producer = durable_producer(settings.kafka, client_id="audit-test")
    await producer.start()
    try:
        events = list(events)
        futures = [
            await producer.send(
                settings.kafka.events_topic, encode_event(e), key=log_key(e), timestamp_ms=e.ts
            )
            for e in events
        ]
        landed = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [Sent(e, m.partition, m.offset) for e, m in zip(events, landed, strict=True)]


def audit_settings(settings: CommonSettings) -> Settings:
    # A small clock slack: the test's record times equal the events' ts exactly.
    return Settings(**settings.model_dump(), audit=AuditSettings(clock_slack_ms=1000))


def log_order(sent: Iterable[Sent]) -> list[Sent]:
    return sorted(sent, key=lambda s: (s.partition, s.offset))


@pytest.fixture
def audit(settings: CommonSettings) -> Settings:
    return audit_settings(settings)
