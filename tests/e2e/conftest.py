"""The whole system as separate processes on the real infrastructure, two gateways.

Each test module gets fresh topics, consumer groups, Redis prefix and DynamoDB table;
tests inside a module use distinct exams so they cannot see each other's students.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from adapters.kafka_topics import delete_topics, ensure_topics
from adapters.settings import CommonSettings, KafkaSettings
from adapters.tokens import ProctorIdentity, StudentIdentity, TokenCodec
from simulator.clients import ProctorBot, StudentBot, client_session
from simulator.launcher import Cluster
from simulator.system import isolated_env
from tests.conftest import scaled

SECRET = "e2e-secret-0123456789abcdef0123456789abcdef"
CODEC = TokenCodec(SECRET)
HEARTBEAT_S = 1.0
LOG_PARTITIONS = 4


class System:
    def __init__(self, cluster: Cluster, settings: CommonSettings, http: aiohttp.ClientSession):
        self.cluster = cluster
        self.settings = settings
        self.http = http
        self.bots: list[StudentBot | ProctorBot] = []

    async def student(
        self,
        exam: str,
        attempt: str,
        *,
        slot: int = 0,
        student: str | None = None,
        attempt_no: int = 1,
        name: str = "",
    ) -> StudentBot:
        token = CODEC.issue(
            StudentIdentity(
                role="student",
                sub=student or f"stu-{attempt}",
                exam=exam,
                attempt=attempt,
                attempt_no=attempt_no,
                name=name,
            )
        )
        bot = StudentBot(self.cluster.gateway_url(slot), token, attempt)
        await bot.connect(self.http, timeout_s=scaled(15))
        self.bots.append(bot)
        return bot

    async def proctor(self, *exams: str, slot: int = 1, watch: bool = True) -> ProctorBot:
        token = CODEC.issue(ProctorIdentity(role="proctor", sub="proctor-1", exams=exams))
        bot = ProctorBot(self.cluster.gateway_url(slot), token)
        await bot.connect(self.http, timeout_s=scaled(15))
        self.bots.append(bot)
        if watch:
            for exam in exams:
                await bot.watch(exam, timeout_s=scaled(30))
        return bot

    async def close_bots(self) -> None:
        for bot in self.bots:
            await bot.close()


async def start_system(tmp_path: Path, infra: CommonSettings) -> tuple[Cluster, CommonSettings]:
    run = f"e2e-{uuid.uuid4().hex[:10]}"
    settings = CommonSettings(
        kafka=KafkaSettings.for_run(
            run,
            bootstrap=infra.kafka.bootstrap,
            events_partitions=LOG_PARTITIONS,
            deliveries_partitions=4,
        ),
        redis=infra.redis.model_copy(update={"key_prefix": f"{run}:"}),
        dynamo=infra.dynamo.model_copy(update={"table": f"{run}-first-attempts"}),
    )
    env = {
        **isolated_env(run, settings.kafka, secret=SECRET),
        "PROCTOR_KAFKA__BOOTSTRAP": infra.kafka.bootstrap,
        "PROCTOR_REDIS__URL": infra.redis.url,
        "PROCTOR_GATEWAY__HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
        "PROCTOR_LOG_LEVEL": "INFO",
    }
    await ensure_topics(settings.kafka)
    cluster = Cluster(env=env, log_dir=tmp_path / "logs", ready_timeout_s=scaled(90))
    try:
        await cluster.start()
    except Exception:
        await cluster.stop_all()
        raise
    return cluster, settings


@pytest.fixture
async def system(tmp_path: Path, infra: CommonSettings) -> AsyncIterator[System]:
    cluster, settings = await start_system(tmp_path, infra)
    async with client_session() as http:
        system = System(cluster, settings, http)
        try:
            yield system
        finally:
            await system.close_bots()
            await cluster.stop_all()
            await delete_topics(settings.kafka)
