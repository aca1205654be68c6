"""The Kafka floor benchmark against the real Kafka: it measures, delivers, and cleans up."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.kafka_topics import partition_count
from adapters.settings import CommonSettings, KafkaSettings

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
    kafka = KafkaSettings.for_run(f"kafkafloor-{result['run']}", bootstrap=infra.kafka.bootstrap)
    for topic in (kafka.events_topic, kafka.deliveries_topic):
        assert asyncio.run(partition_count(kafka, topic)) == 0, f"{topic} left behind"
