"""The publisher turns every Kafka failure into ``Unavailable`` and never acks on failure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError

from schemas.events import EventSource, StudentStatus
from services.gateway.errors import Unavailable
from services.gateway.publisher import Publisher
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
