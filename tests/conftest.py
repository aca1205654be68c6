"""Fixtures shared by all tests.

Integration and end-to-end tests run against the real Kafka, Redis and DynamoDB Local that
``infra/stack up`` starts (the test command does it). Each test gets fresh topics, a fresh
Redis key prefix and a fresh DynamoDB table, so tests never see each other's data.
Every wait in a test scales with ``PROCTOR_TEST_TIMEOUT_FACTOR`` (default 1).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from typing import Any

import pytest

from adapters.kafka_topics import delete_topics, ensure_topics
from adapters.settings import CommonSettings, DynamoSettings, KafkaSettings, RedisSettings

TIMEOUT_FACTOR = float(os.environ.get("PROCTOR_TEST_TIMEOUT_FACTOR", "1"))


def scaled(seconds: float) -> float:
    """A test's wait, scaled for slow machines."""
    return seconds * TIMEOUT_FACTOR


def _reachable(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def infra() -> Iterator[CommonSettings]:
    """The base settings, after checking the infrastructure is up (a failure, never a skip).

    ``PROCTOR_INFRA=testcontainers`` starts the services in Docker instead (tests/containers.py);
    their addresses go into the environment so the services the e2e tests spawn use them too.
    """
    with ExitStack() as stack:
        if os.environ.get("PROCTOR_INFRA") == "testcontainers":
            from tests.containers import start_containers

            os.environ.update(start_containers(stack))
        yield _checked(CommonSettings())


def _checked(base: CommonSettings) -> CommonSettings:
    endpoints = {
        "Kafka": base.kafka.bootstrap.split(",")[0],
        "Redis": base.redis.url.split("//", 1)[1].split("/", 1)[0],
        "DynamoDB Local": (base.dynamo.endpoint or "").split("//", 1)[-1],
    }
    down = [name for name, hostport in endpoints.items() if not _reachable(hostport)]
    if down:
        pytest.fail(f"{', '.join(down)} not reachable: start them with `infra/stack up`")
    return base


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def fresh_run(infra: CommonSettings, **kafka: Any) -> AsyncIterator[CommonSettings]:
    """Settings naming fresh topics (created here, deleted after), Redis keys and DynamoDB
    table for one test; ``kafka`` overrides the topics' partition counts and the like."""
    run = unique("t")
    topics = KafkaSettings.for_run(
        run,
        bootstrap=infra.kafka.bootstrap,
        **({"events_partitions": 4, "deliveries_partitions": 4} | kafka),
    )
    await ensure_topics(topics)
    try:
        yield CommonSettings(
            kafka=topics,
            redis=RedisSettings(url=infra.redis.url, key_prefix=f"{run}:"),
            dynamo=DynamoSettings(endpoint=infra.dynamo.endpoint, table=f"{run}-first-attempts"),
        )
    finally:
        await delete_topics(topics)


@pytest.fixture
async def settings(infra: CommonSettings) -> AsyncIterator[CommonSettings]:
    """Settings naming fresh topics, Redis keys and DynamoDB table for this test alone."""
    async with fresh_run(infra) as fresh:
        yield fresh
