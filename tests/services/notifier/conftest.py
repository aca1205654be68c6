"""The notifier in-process on the test's fresh topics, a gateway double and a log watcher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiokafka import AIOKafkaProducer

from adapters.kafka_clients import durable_producer
from adapters.settings import CommonSettings
from domain.alerts import AlertThresholds
from services.notifier.runtime import Notifier
from services.notifier.settings import NotifierOptions, NotifierSettings
from tests.conftest import scaled, unique
from tests.services.notifier.doubles import GatewayDouble, LogWatcher


@pytest.fixture
def notifier_settings(settings: CommonSettings) -> NotifierSettings:
    return NotifierSettings(
        **settings.model_dump(),
        notifier=NotifierOptions(
            group_id=unique("notifier"),
            gateway_timeout_s=3.0,
            reconnect_grace_s=1.0,
            alerts=AlertThresholds(away_threshold_s=1.0),
            ops_port=0,
        ),
    )


class Notifiers:
    """Notifiers run as asyncio tasks; each start is a new process's worth (same group)."""

    def __init__(self, settings: NotifierSettings) -> None:
        self._settings = settings
        self._running: dict[int, tuple[Notifier, asyncio.Task[None]]] = {}

    async def start(self) -> Notifier:
        options = self._settings.notifier.model_copy(update={"instance": unique("n")})
        notifier = Notifier(self._settings.model_copy(update={"notifier": options}))
        task = asyncio.create_task(notifier.run())
        self._running[id(notifier)] = (notifier, task)
        async with asyncio.timeout(scaled(30)):
            while not notifier.ready():
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        return notifier

    async def stop(self, notifier: Notifier) -> None:
        _, task = self._running.pop(id(notifier))
        notifier.stop()
        async with asyncio.timeout(scaled(15)):
            await task

    async def stop_all(self) -> None:
        for notifier, _ in list(self._running.values()):
            await self.stop(notifier)


@pytest.fixture
async def notifiers(notifier_settings: NotifierSettings) -> AsyncIterator[Notifiers]:
    running = Notifiers(notifier_settings)
    yield running
    await running.stop_all()


@pytest.fixture
async def producer(settings: CommonSettings) -> AsyncIterator[AIOKafkaProducer]:
    producer = durable_producer(settings.kafka, client_id="test-gateway-double")
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
async def gateways(
    settings: CommonSettings, producer: AIOKafkaProducer
) -> AsyncIterator[Callable[[int], Awaitable[GatewayDouble]]]:
    made: list[GatewayDouble] = []

    async def make(slot: int) -> GatewayDouble:
        gateway = GatewayDouble(producer, settings.kafka, slot)
        await gateway.up()
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        await gateway.crash()


@pytest.fixture
async def log(settings: CommonSettings) -> AsyncIterator[LogWatcher]:
    watcher = LogWatcher(settings.kafka)
    await watcher.start()
    yield watcher
    await watcher.stop()
