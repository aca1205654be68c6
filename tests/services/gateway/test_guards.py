"""The id check against the real Redis: batched, in order, never switched off by load."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from adapters.settings import CommonSettings, RedisSettings
from services.gateway.guards import Guards, IdClaim, _Claim
from services.gateway.metrics import GatewayMetrics
from services.gateway.settings import GatewayOptions
from tests.conftest import unique

pytestmark = pytest.mark.integration


def unchecked(metrics: GatewayMetrics) -> float:
    value: float = metrics.guard_unchecked.labels("id")._value.get()
    return value


@pytest.fixture
async def small_pool(settings: CommonSettings) -> AsyncIterator[aioredis.Redis]:
    # Two connections for hundreds of frames: one call per frame ran this dry under load.
    client = aioredis.Redis.from_url(settings.redis.url, max_connections=2)
    yield client
    await client.aclose()


@pytest.fixture
async def guards(
    small_pool: aioredis.Redis, settings: CommonSettings
) -> AsyncIterator[tuple[Guards, GatewayMetrics]]:
    metrics = GatewayMetrics(CollectorRegistry())
    guards = Guards(small_pool, settings.redis, GatewayOptions(), metrics)
    yield guards, metrics
    await guards.close()


async def test_many_frames_at_once_are_all_checked_through_a_small_pool(
    guards: tuple[Guards, GatewayMetrics],
) -> None:
    guard, metrics = guards
    first = await asyncio.gather(
        *(guard.claim_id(f"att-{n % 40}", f"f{n}", "content") for n in range(400))
    )
    assert set(first) == {IdClaim.NEW}
    again = await asyncio.gather(
        *(guard.claim_id(f"att-{n % 40}", f"f{n}", "content") for n in range(400)),
        *(guard.claim_id(f"att-{n % 40}", f"f{n}", "other") for n in range(400)),
    )
    assert again[:400] == [IdClaim.RESEND] * 400
    assert again[400:] == [IdClaim.REUSED] * 400
    assert unchecked(metrics) == 0


async def test_two_copies_of_one_id_in_a_batch_meet_as_first_and_resend(
    guards: tuple[Guards, GatewayMetrics],
) -> None:
    guard, _ = guards
    answers = list(
        await asyncio.gather(
            guard.claim_id("att-1", "dup", "content"),
            guard.claim_id("att-1", "dup", "content"),
            guard.claim_id("att-1", "dup", "changed"),
        )
    )
    assert answers == [IdClaim.NEW, IdClaim.RESEND, IdClaim.REUSED]


async def test_a_flushed_script_cache_is_reloaded_not_skipped(
    guards: tuple[Guards, GatewayMetrics], small_pool: aioredis.Redis
) -> None:
    guard, metrics = guards
    assert await guard.claim_id("att-2", "a", "x") is IdClaim.NEW
    await small_pool.script_flush()  # what a Redis restart does to loaded scripts
    assert await guard.claim_id("att-2", "a", "x") is IdClaim.RESEND
    assert await guard.claim_id("att-2", "b", "x") is IdClaim.NEW
    assert unchecked(metrics) == 0


async def test_a_dead_redis_leaves_frames_unchecked_and_is_skipped_a_while() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=1)
    metrics = GatewayMetrics(CollectorRegistry())
    guard = Guards(client, RedisSettings(timeout_s=1.0), GatewayOptions(guard_retry_s=30), metrics)
    try:
        answers = await asyncio.gather(*(guard.claim_id("att", f"f{n}", "x") for n in range(5)))
        assert answers == [IdClaim.UNCHECKED] * 5
        # Skipped now: answered at once, without a connection attempt.
        async with asyncio.timeout(0.05):
            assert await guard.claim_id("att", "late", "x") is IdClaim.UNCHECKED
        assert unchecked(metrics) == 6
    finally:
        await guard.close()
        await client.aclose()


class CountingGuards(Guards):
    """Records the size of every batch it sends."""

    batches: list[int]

    async def _run_script(self, batch: list[_Claim]) -> list[object]:
        self.batches = [*getattr(self, "batches", []), len(batch)]
        return await super()._run_script(batch)


@pytest.mark.parametrize(("above_per_s", "batches"), [(0.0, [3]), (1000.0, [1, 1, 1])])
async def test_claims_wait_for_company_only_while_the_gateway_is_busy(
    small_pool: aioredis.Redis, settings: CommonSettings, above_per_s: float, batches: list[int]
) -> None:
    # 0: the window always applies; 1,000/s: three claims a second never open it.
    options = GatewayOptions(claim_window_ms=50, claim_window_above_per_s=above_per_s)
    guard = CountingGuards(small_pool, settings.redis, options, GatewayMetrics(CollectorRegistry()))
    claims = []
    try:
        for n in range(3):
            claims.append(asyncio.ensure_future(guard.claim_id("att-w", unique(f"f{n}"), "c")))
            await asyncio.sleep(0.015)
        assert await asyncio.gather(*claims) == [IdClaim.NEW] * 3
        assert guard.batches == batches
    finally:
        await guard.close()


async def test_a_scope_remembers_its_newest_ids_only_and_for_the_ttl(
    small_pool: aioredis.Redis, settings: CommonSettings
) -> None:
    options = GatewayOptions(id_memory=64, id_memory_ttl_s=120)
    guard = Guards(small_pool, settings.redis, options, GatewayMetrics(CollectorRegistry()))
    scope = unique("att-m")
    try:
        # One batch, in order: the 65th id pushes the first out of the scope's memory.
        first = await asyncio.gather(*(guard.claim_id(scope, f"f{n}", "c") for n in range(65)))
        assert first == [IdClaim.NEW] * 65
        assert await guard.claim_id(scope, "f64", "c") is IdClaim.RESEND
        assert await guard.claim_id(scope, "f1", "other") is IdClaim.REUSED
        assert await guard.claim_id(scope, "f0", "other") is IdClaim.NEW  # forgotten
        base = f"{settings.redis.key_prefix}ids:{{{scope}}}"
        assert await small_pool.hlen(f"{base}:fp") == 64
        assert await small_pool.llen(f"{base}:order") == 64
        for key in (f"{base}:fp", f"{base}:order"):
            assert 0 < await small_pool.ttl(key) <= 120
    finally:
        await guard.close()


class WrongAnswerGuards(Guards):
    """A Redis whose script answers in a shape the gateway does not know."""

    async def _run_script(self, batch: list[_Claim]) -> list[object]:
        await super()._run_script(batch)
        raise RedisError("the id script answered 'OK' for 2 claims")


async def test_a_batch_answered_in_an_unknown_shape_goes_on_unchecked(
    small_pool: aioredis.Redis, settings: CommonSettings
) -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    guard = WrongAnswerGuards(small_pool, settings.redis, GatewayOptions(), metrics)
    try:
        answers = list(
            await asyncio.gather(
                guard.claim_id(unique("att-x"), "f1", "c"),
                guard.claim_id(unique("att-x"), "f2", "c"),
            )
        )
        assert answers == [IdClaim.UNCHECKED] * 2
        assert unchecked(metrics) == 2
    finally:
        await guard.close()


async def test_a_backlog_of_checks_goes_out_in_bounded_script_calls(
    small_pool: aioredis.Redis, settings: CommonSettings
) -> None:
    guard = CountingGuards(
        small_pool, settings.redis, GatewayOptions(), GatewayMetrics(CollectorRegistry())
    )
    scope = unique("att-b")
    try:
        answers = await asyncio.gather(*(guard.claim_id(scope, f"f{n}", "c") for n in range(1200)))
        assert answers == [IdClaim.NEW] * 1200
        assert guard.batches == [500, 500, 200]
    finally:
        await guard.close()
