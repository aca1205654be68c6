"""The publisher turns every Kafka failure into ``Unavailable`` and never acks on failure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError

from schemas.events import EventSource, StudentStatus
from services.gateway.errors import Unavailable
from services.gateway.publisher import Publisher, RecentPublishes
from services.gateway.settings import GatewaySettings

EVENT = StudentStatus(
    id="e1",
    exam="x",
    attempt="a1",
    student="s1",
    ts=1,
    source=EventSource(kind="student", id="s1", gateway=0),
    status="away",
)


class RefusingProducer:
    def __init__(self, *, at_send: bool) -> None:
        self.at_send = at_send

    async def send(self, *_: Any, **__: Any) -> asyncio.Future[None]:
        if self.at_send:
            raise KafkaTimeoutError()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_exception(NotLeaderForPartitionError())
        return future

    async def send_and_wait(self, *_: Any, **__: Any) -> None:
        raise KafkaTimeoutError()


async def test_a_refused_send_is_unavailable() -> None:
    publisher = Publisher(RefusingProducer(at_send=True), GatewaySettings())
    with pytest.raises(Unavailable):
        await publisher.publish([EVENT])


async def test_a_failed_delivery_resolves_to_unavailable_not_to_an_ack() -> None:
    publisher = Publisher(RefusingProducer(at_send=False), GatewaySettings())
    done = await publisher.publish([EVENT])
    with pytest.raises(Unavailable):
        await done


async def test_a_refused_presence_write_is_unavailable() -> None:
    publisher = Publisher(RefusingProducer(at_send=True), GatewaySettings())
    with pytest.raises(Unavailable):
        await publisher.presence(b"gw/0", None)


async def test_recent_publishes_forget_a_failed_publish_and_keep_the_newest() -> None:
    recent = RecentPublishes(capacity=2)
    loop = asyncio.get_running_loop()
    failed: asyncio.Future[None] = loop.create_future()
    landed: asyncio.Future[None] = loop.create_future()
    recent.track(("a1", "f1"), failed)
    recent.track(("a1", "f2"), landed)
    assert recent.get(("a1", "f1")) is failed  # still in flight: a resend joins it
    failed.set_exception(Unavailable("no"))
    landed.set_result(None)
    assert recent.get(("a1", "f1")) is None  # did not land: the resend publishes again
    assert recent.get(("a1", "f2")) is landed
    recent.track(("a1", "f2"), landed)  # tracked again: now the newest
    recent.track(("a1", "f3"), loop.create_future())
    recent.track(("a1", "f4"), loop.create_future())
    assert len(recent) == 2
    assert recent.get(("a1", "f2")) is None  # the oldest went first
    assert recent.get(("a1", "f4")) is not None
