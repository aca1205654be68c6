"""The Kafka floor benchmark against the real Kafka: it measures, delivers, and cleans up."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from adapters.settings import CommonSettings

pytestmark = pytest.mark.integration

_SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "kafka_floor.py"


def test_the_kafka_floor_delivers_every_update_and_deletes_its_topics(
    infra: CommonSettings,
) -> None:
    done = subprocess.run(
        [sys.executable, str(_SCRIPT), "--rate", "100", "--duration", "3", "--warmup", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Three seconds at 100 updates/s reach the inboxes through the router; a broken hop
    # (router, deliveries, inbox) delivers nothing and has no latency to report.
    assert 150 <= result["delivered"] <= 450, result
    assert result["p50_ms"] is not None and result["p50_ms"] > 0
    assert result["kafka_us_per_update"] > 0
    topics = asyncio.run(_topics(infra.kafka.bootstrap))
    assert [name for name in topics if result["run"] in name] == []


async def _topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()
