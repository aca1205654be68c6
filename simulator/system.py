"""The whole system for one benchmark run: fresh topics, groups, Redis prefix and table,
two gateways, router, status and notifier as processes (``Cluster``), torn down after."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from adapters.kafka_topics import delete_topics, ensure_topics
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
        "PROCTOR_REDIS__KEY_PREFIX": f"{run_id}:",
        "PROCTOR_DYNAMO__TABLE": f"{run_id}-first-attempts",
        "PROCTOR_GATEWAY__TOKEN_SECRET": secret,
        "PROCTOR_ROUTER__APP_ID": f"{run_id}-router",
        "PROCTOR_STATUS__GROUP_ID": f"{run_id}-status",
        "PROCTOR_NOTIFIER__GROUP_ID": f"{run_id}-notifier",
    }


@asynccontextmanager
async def bench_system(
    prefix: str = "sim", extra_env: dict[str, str] | None = None
) -> AsyncIterator[Cluster]:
    run_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    base = CommonSettings()
    kafka = KafkaSettings.for_run(run_id, bootstrap=base.kafka.bootstrap)
    await ensure_topics(kafka)
    env = {
        **isolated_env(run_id, kafka, secret=SECRET),
        "PROCTOR_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    cluster = Cluster(env=env, log_dir=ROOT / ".local" / "logs" / run_id)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop_all()
        await delete_topics(kafka)
