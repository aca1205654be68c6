"""The id-check benchmark against the real Redis: it measures, and leaves no ids behind."""

from __future__ import annotations

import pytest

from adapters.redis_client import redis_client
from adapters.settings import CommonSettings
from simulator import claim_bench

pytestmark = pytest.mark.integration


async def test_the_id_check_benchmark_measures_and_deletes_its_ids(
    settings: CommonSettings,
) -> None:
    result = await claim_bench.run(batch=5, claims=100, redis=settings.redis)
    assert result.claims == 100
    assert result.gateway_us_per_claim > 0
    client = redis_client(settings.redis)
    try:
        pattern = f"{settings.redis.key_prefix}ids:{{{result.run_id}-*"
        left = [key async for key in client.scan_iter(match=pattern, count=1000)]
    finally:
        await client.aclose()
    assert left == []
