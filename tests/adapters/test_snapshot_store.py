"""Contract of the ``SnapshotStore`` port: Redis and the in-memory fake answer alike."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from adapters.settings import CommonSettings
from adapters.snapshot_store import InMemorySnapshotStore, RedisSnapshotStore, SnapshotStore
from schemas.views import AttemptState, StudentView


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> CommonSettings | None:
    if request.param == "memory":
        return None
    settings: CommonSettings = request.getfixturevalue("settings")
    return settings


@pytest.fixture
async def store(backend: CommonSettings | None) -> AsyncIterator[SnapshotStore]:
    if backend is None:
        yield InMemorySnapshotStore()
        return
    client = aioredis.Redis.from_url(backend.redis.url)
    try:
        yield RedisSnapshotStore(client, backend.redis, topic=backend.kafka.events_topic)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{backend.redis.key_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def state(exam: str, attempt: str, seq: int, **fields: object) -> AttemptState:
    view = StudentView.model_validate(
        {"exam": exam, "attempt": attempt, "student": f"stu-{attempt}", "seq": seq} | fields
    )
    return AttemptState(view=view, last_client_seq=seq, recent_ids=(f"id{seq}",))


async def test_empty_store_has_nothing(store: SnapshotStore) -> None:
    assert await store.read_exam("e1") == ([], {})
    assert await store.read_attempt("e1", "a1") is None
    assert await store.watermarks() == {}


async def test_write_then_read_states_and_watermarks(store: SnapshotStore) -> None:
    a1, a2 = state("e1", "a1", 4, name="Ada"), state("e1", "a2", 7, status="away")
    other = state("e2", "b1", 2)
    await store.write([a1, a2, other], {0: 4, 1: 7})
    states, marks = await store.read_exam("e1")
    assert sorted(states, key=lambda s: s.view.attempt) == [a1, a2]
    assert marks == {0: 4, 1: 7}
    assert await store.read_attempt("e1", "a2") == a2
    assert await store.read_attempt("e2", "a1") is None
    assert await store.read_exam("e2") == ([other], {0: 4, 1: 7})


async def test_later_write_replaces_states_and_moves_named_watermarks(store: SnapshotStore) -> None:
    await store.write([state("e1", "a1", 4)], {0: 4, 1: 7})
    newer = state("e1", "a1", 9, answered=3)
    await store.write([newer], {0: 9})
    assert await store.read_attempt("e1", "a1") == newer
    assert await store.watermarks() == {0: 9, 1: 7}


async def test_watermarks_alone_can_move(store: SnapshotStore) -> None:
    # A batch that changed no state still advances its partitions' watermarks.
    await store.write([], {3: 120})
    assert await store.watermarks() == {3: 120}
    assert await store.read_exam("e1") == ([], {3: 120})


async def test_a_late_write_never_rolls_the_snapshot_back(store: SnapshotStore) -> None:
    # A status instance that lost its partitions may still land a write from before.
    newer = state("e1", "a1", 9, answered=3)
    await store.write([newer], {0: 9})
    await store.write([state("e1", "a1", 4, answered=1)], {0: 4})
    assert await store.read_attempt("e1", "a1") == newer
    assert await store.watermarks() == {0: 9}
