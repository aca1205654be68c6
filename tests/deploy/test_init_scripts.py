"""The one-shot init of docker-compose.yml and k8s/base/init-job.yaml, run for real against
the infrastructure: it must create every topic with its partitions and the DynamoDB table,
and a second run must change nothing."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from adapters.dynamo_store import DynamoStatusStore
from adapters.kafka_topics import topic_specs
from adapters.settings import CommonSettings, DynamoSettings, KafkaSettings
from tests.conftest import scaled, unique
from tests.deploy.support import COMPOSE_FILE, K8S_BASE, yaml_documents

pytestmark = pytest.mark.integration


def _compose_script() -> str:
    (compose,) = yaml_documents(COMPOSE_FILE)
    return str(compose["services"]["init"]["command"][-1])


def _job_script() -> str:
    (job,) = yaml_documents(K8S_BASE / "init-job.yaml")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return str(container["command"][-1])


SCRIPTS = {"compose": _compose_script, "k8s-job": _job_script}


@pytest.fixture
async def target(infra: CommonSettings) -> AsyncIterator[CommonSettings]:
    """Names no one else uses; everything the script creates is removed afterwards."""
    run = unique("deploy")
    settings = CommonSettings(
        kafka=KafkaSettings.for_run(
            run, bootstrap=infra.kafka.bootstrap, events_partitions=3, deliveries_partitions=5
        ),
        dynamo=DynamoSettings(endpoint=infra.dynamo.endpoint, table=f"{run}-first-attempts"),
    )
    yield settings
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    async with asyncio.timeout(scaled(30)):
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            names = [s.name for s in topic_specs(settings.kafka) if s.name in existing]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()
    store = DynamoStatusStore(settings.dynamo)
    await store.open(create_table=False)
    try:
        await store.delete_table()
    finally:
        await store.close()


def _env(settings: CommonSettings) -> dict[str, str]:
    kafka, dynamo = settings.kafka, settings.dynamo
    return {
        "PATH": "/usr/bin:/bin",
        "PROCTOR_KAFKA__BOOTSTRAP": kafka.bootstrap,
        "PROCTOR_KAFKA__EVENTS_TOPIC": kafka.events_topic,
        "PROCTOR_KAFKA__PRESENCE_TOPIC": kafka.presence_topic,
        "PROCTOR_KAFKA__HEARTBEATS_TOPIC": kafka.heartbeats_topic,
        "PROCTOR_KAFKA__DELIVERIES_TOPIC": kafka.deliveries_topic,
        "PROCTOR_KAFKA__EVENTS_PARTITIONS": str(kafka.events_partitions),
        "PROCTOR_KAFKA__DELIVERIES_PARTITIONS": str(kafka.deliveries_partitions),
        "PROCTOR_DYNAMO__ENDPOINT": dynamo.endpoint or "",
        "PROCTOR_DYNAMO__TABLE": dynamo.table,
    }


async def _run(script: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(scaled(90)):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, output.decode()


async def _partitions(kafka: KafkaSettings) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    async with asyncio.timeout(scaled(30)):
        await admin.start()
        try:
            names = [spec.name for spec in topic_specs(kafka)]
            described = await admin.describe_topics(names)
        finally:
            await admin.close()
    return {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}


@pytest.mark.parametrize("source", sorted(SCRIPTS))
async def test_init_creates_topics_and_table_once(
    source: str, target: CommonSettings, tmp_path: Path
) -> None:
    script = SCRIPTS[source]()
    env = _env(target)

    code, output = await _run(script, env, tmp_path)
    assert code == 0, output
    assert target.dynamo.table in output
    expected = {spec.name: spec.partitions for spec in topic_specs(target.kafka)}
    assert await _partitions(target.kafka) == expected
    store = DynamoStatusStore(target.dynamo)
    await store.open(create_table=False)
    try:
        assert await store.ensure_table() is False  # the script already created it
    finally:
        await store.close()

    code, output = await _run(script, env, tmp_path)
    assert code == 0, output
    assert "topics created: none" in output
