"""The whole system on a secured Kafka (SASL_SSL, SCRAM-SHA-512) and Redis (TLS, password).

A session fixture starts a separate secured instance with ``infra/stack secure-up`` in a
directory of its own on free ports (so it never meets the default instance, nor a secured
instance someone started by hand), and stops it at the end with ``secure-down`` (by the pids
in its own pid files). The services get nothing but the environment ``secure-up`` wrote
(``<dir>/env``): two gateways, router, status and notifier, students and a proctor; events
must be acknowledged, reach the proctor, and land in the Redis snapshot. Then the refusals:
a wrong SCRAM password, a plaintext client on the SASL_SSL port, a Redis client without the
password or without TLS, a mutual-TLS client without its certificate.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from adapters.kafka_clients import durable_producer
from adapters.kafka_topics import delete_topics, ensure_topics, partition_count
from adapters.redis_client import redis_client
from adapters.settings import CommonSettings, KafkaSettings, RedisSettings
from adapters.snapshot_store import RedisSnapshotStore
from simulator.clients import ProctorBot, StudentBot, client_session
from simulator.launcher import Cluster, free_port
from simulator.system import isolated_env
from tests.conftest import scaled
from tests.e2e.conftest import HEARTBEAT_S, SECRET, System
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "infra" / "stack"


@dataclass(frozen=True)
class Secured:
    """The secured instance: the services' environment for SASL_SSL and for mutual TLS."""

    directory: Path
    env: dict[str, str]
    mtls_env: dict[str, str]

    def kafka(self, run: str, *, env: dict[str, str] | None = None, **fields: Any) -> KafkaSettings:
        values = _section(env or self.env, "PROCTOR_KAFKA__")
        return KafkaSettings.for_run(run, **(values | fields))

    def redis(self, **fields: Any) -> RedisSettings:
        return RedisSettings(**(_section(self.env, "PROCTOR_REDIS__") | fields))


def _section(env: dict[str, str], prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}


def _read_env(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def _stack(args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STACK), args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="session")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    directory = tmp_path_factory.mktemp("secure")
    env = {
        **os.environ,
        "PROCTOR_SECURE_DIR": str(directory),
        "PYTHON": sys.executable,  # its readiness check logs in with SCRAM over TLS
        **{
            f"PROCTOR_SECURE_{name}_PORT": str(free_port())
            for name in ("KAFKA", "KAFKA_CONTROLLER", "KAFKA_BROKER", "KAFKA_MTLS", "REDIS")
        },
    }
    started = _stack("secure-up", env)
    try:
        if started.returncode != 0:
            pytest.fail(f"infra/stack secure-up failed:\n{started.stdout}\n{started.stderr}")
        yield Secured(directory, _read_env(directory / "env"), _read_env(directory / "env.mtls"))
    finally:
        stopped = _stack("secure-down", env)
        assert stopped.returncode == 0, stopped.stderr


@pytest.fixture
async def secured_system(
    request: pytest.FixtureRequest, tmp_path: Path, infra: CommonSettings, secured: Secured
) -> AsyncIterator[System]:
    engine = getattr(request, "param", "aiokafka")
    run = f"sec-{uuid.uuid4().hex[:10]}"
    kafka = secured.kafka(run, events_partitions=4, deliveries_partitions=4)
    settings = CommonSettings(
        kafka=kafka,
        redis=secured.redis(key_prefix=f"{run}:"),
        dynamo=infra.dynamo.model_copy(update={"table": f"{run}-first-attempts"}),
    )
    env = {
        **isolated_env(run, kafka, secret=SECRET),
        **secured.env,  # nothing but what secure-up wrote: no password, only files
        "PROCTOR_GATEWAY__HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
        "PROCTOR_ROUTER__ENGINE": engine,
        "PROCTOR_ROUTER__DATA_DIR": str(tmp_path / "router"),
        "PROCTOR_LOG_LEVEL": "INFO",
    }
    await ensure_topics(kafka)
    cluster = Cluster(env=env, log_dir=tmp_path / "logs", ready_timeout_s=scaled(60))
    try:
        await cluster.start()
        async with client_session() as http:
            system = System(cluster, settings, http)
            try:
                yield system
            finally:
                await system.close_bots()
    finally:
        await cluster.stop_all()
        await delete_topics(kafka)


def _row(proctor: ProctorBot, attempt: str, **expected: Any) -> dict[str, Any] | None:
    found = proctor.rows.get(attempt)
    if found is None or any(found.get(k) != v for k, v in expected.items()):
        return None
    return found


def _all_acked(student: StudentBot) -> Callable[[], bool]:
    return lambda: not student.unacked and bool(student.acked)


def _answered(proctor: ProctorBot, student: StudentBot, answered: int) -> Callable[[], object]:
    return lambda: _row(proctor, student.attempt, answered=answered)


# The router's Faust engine builds its clients through Faust: broker_credentials, not kwargs.
@pytest.mark.parametrize("secured_system", ["aiokafka", "faust"], indirect=True)
async def test_the_system_runs_on_secured_kafka_and_redis(
    secured_system: System, secured: Secured
) -> None:
    system = secured_system
    assert "PASSWORD_FILE" in " ".join(secured.env) and "SASL_PASSWORD=" not in str(secured.env)
    students = [await system.student("ex-sec", f"s{i}", slot=i % 2) for i in range(3)]
    proctor = await system.proctor("ex-sec", slot=1)
    for student in students:
        student.question, student.answered = 4, 3
        await student.progress()
    await students[0].set_status("away")

    for student in students:
        await eventually(
            _all_acked(student), within_s=10, what=f"{student.attempt}'s events acknowledged"
        )
        await eventually(
            _answered(proctor, student, 3),
            within_s=10,
            what=f"{student.attempt}'s progress on the dashboard",
        )
    await eventually(lambda: _row(proctor, "s0", status="away"), within_s=10, what="s0 away")

    message = await proctor.command("message", "ex-sec", attempt="s1", text="through TLS")
    await eventually(lambda: message in proctor.acked, within_s=10, what="message acked")
    await eventually(
        lambda: [n for n in students[1].notices if n.get("text") == "through TLS"],
        within_s=10,
        what="the message delivered to s1",
    )

    client = redis_client(system.settings.redis)
    try:
        store = RedisSnapshotStore(
            client, system.settings.redis, topic=system.settings.kafka.events_topic
        )

        async def snapshot() -> dict[str, int]:
            states, _ = await store.read_exam("ex-sec", partial=True)
            return {s.view.attempt: s.view.answered for s in states}

        deadline = asyncio.get_running_loop().time() + scaled(15)
        while (held := await snapshot()) != {"s0": 3, "s1": 3, "s2": 3}:
            assert asyncio.get_running_loop().time() < deadline, f"snapshot holds {held}"
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()


async def test_a_wrong_scram_password_is_refused(
    secured: Secured, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    kafka = secured.kafka("refused", sasl_password_file=str(wrong), request_timeout_s=5)
    producer = durable_producer(kafka, client_id="wrong-password")
    caplog.set_level(logging.ERROR, logger="aiokafka")
    try:
        with pytest.raises(KafkaConnectionError):
            async with asyncio.timeout(scaled(15)):
                await producer.start()
    finally:
        await producer.stop()
    assert "SaslAuthenticationFailed" in caplog.text
    assert "invalid credentials" in caplog.text


async def test_a_service_with_a_wrong_password_does_not_start(
    secured: Secured, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    run = f"sec-{uuid.uuid4().hex[:10]}"
    kafka = secured.kafka(run, request_timeout_s=3)
    env = {
        **isolated_env(run, kafka, secret=SECRET),
        **secured.env,
        "PROCTOR_KAFKA__SASL_PASSWORD_FILE": str(wrong),
        "PROCTOR_KAFKA__REQUEST_TIMEOUT_S": "3",
    }
    cluster = Cluster(
        env=env, log_dir=tmp_path / "logs", gateway_slots=(0,), ready_timeout_s=scaled(20)
    )
    try:
        with pytest.raises(RuntimeError, match="gateway-0 exited"):
            await cluster.start("gateway-0")
        assert "SaslAuthenticationFailed" in cluster.tail("gateway-0", lines=400)
    finally:
        await cluster.stop_all()


async def test_plaintext_clients_get_nowhere_on_the_secured_ports(secured: Secured) -> None:
    plaintext = KafkaSettings(
        bootstrap=secured.env["PROCTOR_KAFKA__BOOTSTRAP"], request_timeout_s=3
    )
    with pytest.raises(KafkaConnectionError):
        async with asyncio.timeout(scaled(15)):
            await partition_count(plaintext, "anything")

    redis = secured.redis()
    without_password = redis_client(redis.model_copy(update={"password_file": None}))
    plain_redis = redis_client(
        RedisSettings(url=redis.url.replace("rediss://", "redis://")),
        socket_connect_timeout=2,
        socket_timeout=2,
    )
    with_password = redis_client(redis, socket_connect_timeout=2, socket_timeout=2)
    try:
        async with asyncio.timeout(scaled(10)):
            with pytest.raises(AuthenticationError):
                await without_password.ping()
            with pytest.raises(RedisConnectionError):
                await plain_redis.ping()
            assert await with_password.ping()
    finally:
        for client in (without_password, plain_redis, with_password):
            await client.aclose()


async def test_mutual_tls_needs_the_client_certificate(secured: Secured) -> None:
    run = f"sec-{uuid.uuid4().hex[:10]}"
    kafka = secured.kafka(run, env=secured.mtls_env, events_partitions=2)
    await ensure_topics(kafka)
    try:
        assert await partition_count(kafka, kafka.events_topic) == 2
        no_cert = kafka.model_copy(
            update={"ssl_certfile": None, "ssl_keyfile": None, "request_timeout_s": 3}
        )
        with pytest.raises(KafkaConnectionError):
            async with asyncio.timeout(scaled(15)):
                await partition_count(no_cert, kafka.events_topic)
    finally:
        await delete_topics(kafka)

    redis = RedisSettings(**_section(secured.mtls_env, "PROCTOR_REDIS__"))
    client = redis_client(redis, socket_connect_timeout=2, socket_timeout=2)
    try:
        async with asyncio.timeout(scaled(10)):
            assert await client.ping()
    finally:
        await client.aclose()
