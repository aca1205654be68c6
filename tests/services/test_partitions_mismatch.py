"""Each service refuses to start when the event log has another number of partitions than
its settings say, and says which setting to fix; none of them starts reading a part of it.
A gateway also refuses a slot the deliveries topic has no partition for.

The log and the deliveries topic here have 4 partitions (the tests' fresh topics); the
settings say 6."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestServer

from adapters.dynamo_store import InMemoryStatusStore
from adapters.kafka_topics import PartitionsMismatch, partition_count
from adapters.settings import CommonSettings
from adapters.snapshot_store import InMemorySnapshotStore
from services.gateway.app import create_app, server_options
from services.gateway.settings import GatewayOptions, GatewaySettings
from services.notifier.errors import StartupFailed as NotifierStartupFailed
from services.notifier.runtime import Notifier
from services.notifier.settings import NotifierOptions, NotifierSettings
from services.router.errors import StartupFailed as RouterStartupFailed
from services.router.service import RouterService
from services.router.settings import RouterOptions, RouterSettings
from services.status.errors import StartupFailed as StatusStartupFailed
from services.status.service import StatusService
from services.status.settings import Settings as StatusSettings
from services.status.settings import StatusServiceSettings
from tests.conftest import scaled
from tests.services.gateway.conftest import SECRET

pytestmark = pytest.mark.integration

SAID = "PROCTOR_KAFKA__EVENTS_PARTITIONS is 6"


@pytest.fixture
async def wrong(settings: CommonSettings) -> CommonSettings:
    assert await partition_count(settings.kafka, settings.kafka.events_topic) == 4
    return settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"events_partitions": 6})}
    )


async def start_gateway(settings: CommonSettings, slot: int) -> None:
    """Start a gateway with these settings in this slot, and close it again."""
    gateway_settings = GatewaySettings(
        **settings.model_dump(), gateway=GatewayOptions(slot=slot, token_secret=SECRET)
    )
    server = TestServer(create_app(gateway_settings), host="127.0.0.1")
    try:
        async with asyncio.timeout(scaled(30)):
            await server.start_server(**server_options(gateway_settings.gateway))
    finally:
        await server.close()


async def test_a_gateway_does_not_start(wrong: CommonSettings) -> None:
    with pytest.raises(PartitionsMismatch, match=f"has 4 partitions but {SAID}"):
        await start_gateway(wrong, slot=1)


async def test_a_gateway_without_an_inbox_does_not_start(settings: CommonSettings) -> None:
    with pytest.raises(PartitionsMismatch, match="gateway slot 4 has no inbox: .* has 4"):
        await start_gateway(settings, slot=4)


async def test_a_router_does_not_start(wrong: CommonSettings) -> None:
    service = RouterService(
        RouterSettings(kafka=wrong.kafka, router=RouterOptions(ops_port=0, app_id="r-mismatch"))
    )
    try:
        with pytest.raises(RouterStartupFailed, match=f"has 4 partitions but {SAID}"):
            async with asyncio.timeout(scaled(60)):
                await service.start()
    finally:
        await service.stop()


async def test_a_status_service_does_not_start(wrong: CommonSettings) -> None:
    service = StatusService(
        StatusSettings(kafka=wrong.kafka, status=StatusServiceSettings(ops_port=0)),
        dynamo=InMemoryStatusStore(),
        snapshots=InMemorySnapshotStore(),
    )
    with pytest.raises(StatusStartupFailed, match=f"has 4 partitions but {SAID}"):
        async with asyncio.timeout(scaled(60)):
            await service.run()
    assert not service.ready()


async def test_a_notifier_does_not_start(wrong: CommonSettings) -> None:
    notifier = Notifier(NotifierSettings(kafka=wrong.kafka, notifier=NotifierOptions(ops_port=0)))
    with pytest.raises(NotifierStartupFailed, match=f"has 4 partitions but {SAID}"):
        async with asyncio.timeout(scaled(60)):
            await notifier.run()
    assert not notifier.ready()
