"""A benchmark run leaves nothing behind in Redis or DynamoDB Local, and touches nothing else."""

from __future__ import annotations

import pytest
from redis import asyncio as aioredis

from adapters.dynamo_store import DynamoStatusStore, StatusStoreUnavailable
from adapters.settings import CommonSettings
from simulator.system import forget_run
from tests.conftest import unique

pytestmark = pytest.mark.integration


async def test_forget_run_deletes_the_runs_keys_and_table_only(settings: CommonSettings) -> None:
    run, other = unique("run"), unique("other")
    client = aioredis.Redis.from_url(settings.redis.url)
    table = DynamoStatusStore(settings.dynamo.model_copy(update={"table": f"{run}-first-attempts"}))
    try:
        await client.mset({f"{run}:k{n}": "x" for n in range(2500)} | {f"{other}:k": "x"})
        await table.open()
        await forget_run(settings, run)
        assert [key async for key in client.scan_iter(match=f"{run}:*")] == []
        assert await client.get(f"{other}:k") == b"x"
        with pytest.raises(StatusStoreUnavailable, match="TableNotFound"):
            await table.get("e", "s")  # the table is gone
    finally:
        await client.delete(f"{other}:k")
        await client.aclose()
        await table.close()
