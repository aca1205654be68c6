"""The whole system for one benchmark run: fresh topics, groups, Redis prefix and table,
two gateways, router, status and notifier as processes (``Cluster``), torn down after:
the topics, the Redis keys under the run's prefix and the table go with it, so a day of
runs leaves neither memory in Redis (a 10,000-student run leaves ~100,000 keys, id checks
that live a day) nor tables in DynamoDB Local behind."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from adapters.dynamo_store import DynamoStatusStore, StatusStoreUnavailable
from adapters.kafka_topics import delete_topics, ensure_topics
from adapters.redis_client import redis_client
from adapters.settings import CommonSettings, KafkaSettings
from simulator.launcher import Cluster

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"


def isolated_env(run_id: str, kafka: KafkaSettings, *, secret: str) -> dict[str, str]:
    """Environment that points every service at this run's own topics, consumer groups,
    Redis prefix and DynamoDB table, so runs never see each other's data."""
    return {
        "PROCTOR_KAFKA__EVENTS_TOPIC": kafka.events_topic,
        "PROCTOR_KAFKA__PRESENCE_TOPIC": kafka.presence_topic,
        "PROCTOR_KAFKA__HEARTBEATS_TOPIC": kafka.heartbeats_topic,
        "PROCTOR_KAFKA__DELIVERIES_TOPIC": kafka.deliveries_topic,
        "PROCTOR_KAFKA__EVENTS_PARTITIONS": str(kafka.events_partitions),
        "PROCTOR_KAFKA__DELIVERIES_PARTITIONS": str(kafka.deliveries_partitions),
        "PROCTOR_KAFKA__HEARTBEATS_PARTITIONS": str(kafka.heartbeats_partitions),
        "PROCTOR_REDIS__KEY_PREFIX": f"{run_id}:",
        "PROCTOR_DYNAMO__TABLE": f"{run_id}-first-attempts",
        "PROCTOR_GATEWAY__TOKEN_SECRET": secret,
        "PROCTOR_LTI__TOKEN_SECRET": secret,
        "PROCTOR_ROUTER__APP_ID": f"{run_id}-router",
        "PROCTOR_STATUS__GROUP_ID": f"{run_id}-status",
        "PROCTOR_NOTIFIER__GROUP_ID": f"{run_id}-notifier",
    }


@asynccontextmanager
async def bench_system(
    prefix: str = "sim",
    extra_env: dict[str, str] | None = None,
    *,
    gateways: int = 2,
    replicas: int = 1,
    heartbeats_partitions: int = 1,
) -> AsyncIterator[Cluster]:
    """The whole system for one run: ``gateways`` gateways and ``replicas`` of each other
    service (sharing the liveness work over ``heartbeats_partitions``)."""
    run_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    base = CommonSettings()
    kafka = KafkaSettings.for_run(
        run_id,
        bootstrap=base.kafka.bootstrap,
        events_partitions=base.kafka.events_partitions,
        heartbeats_partitions=heartbeats_partitions,
    )
    await ensure_topics(kafka)
    env = {
        **isolated_env(run_id, kafka, secret=SECRET),
        "PROCTOR_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    cluster = Cluster(
        env=env,
        log_dir=ROOT / ".local" / "logs" / run_id,
        gateway_slots=tuple(range(gateways)),
        replicas=replicas,
    )
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop_all()
        await delete_topics(kafka)
        await forget_run(base, run_id)


async def forget_run(base: CommonSettings, run_id: str) -> None:
    """Delete what a run left in Redis (keys under its prefix) and its DynamoDB table."""
    client = redis_client(base.redis)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{run_id}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch = []
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()
    table = DynamoStatusStore(base.dynamo.model_copy(update={"table": f"{run_id}-first-attempts"}))
    try:
        await table.open(create_table=False)
        await table.delete_table()
    except StatusStoreUnavailable:
        pass  # DynamoDB Local gone: nothing to tidy
    finally:
        await table.close()
