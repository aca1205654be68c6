"""A status service that cannot reach Kafka says so and exits, instead of hanging."""

from __future__ import annotations

import asyncio

import pytest

from adapters.dynamo_store import InMemoryStatusStore
from adapters.settings import KafkaSettings
from adapters.snapshot_store import InMemorySnapshotStore
from services.status.errors import StartupFailed, StatusError
from services.status.service import StatusService
from services.status.settings import Settings, StatusServiceSettings
from tests.conftest import scaled


async def test_unreachable_kafka_fails_startup() -> None:
    settings = Settings(
        kafka=KafkaSettings(bootstrap="127.0.0.1:1", request_timeout_s=1.0),
        status=StatusServiceSettings(ops_port=0),
    )
    service = StatusService(
        settings, dynamo=InMemoryStatusStore(), snapshots=InMemorySnapshotStore()
    )
    with pytest.raises(StartupFailed) as failure:
        async with asyncio.timeout(scaled(20)):
            await service.run()
    assert isinstance(failure.value, StatusError)
    assert "127.0.0.1:1" in str(failure.value)
    assert not service.ready()
