"""Contract of the ``SnapshotStore`` port: Redis and the in-memory fake answer alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from adapters.settings import CommonSettings
from adapters.snapshot_store import (
    InMemorySnapshotStore,
    RedisSnapshotStore,
    SnapshotIncomplete,
    SnapshotStore,
)
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
        await _delete_prefix(client, backend)
        await client.aclose()


@pytest.fixture
async def lose(
    backend: CommonSettings | None, store: SnapshotStore
) -> Callable[[], Awaitable[None]]:
    """What FLUSHALL does, confined to the test's prefix."""

    async def lose() -> None:
        if backend is None:
            assert isinstance(store, InMemorySnapshotStore)
            store.lose()
            return
        client = aioredis.Redis.from_url(backend.redis.url)
        try:
            await _delete_prefix(client, backend)
        finally:
            await client.aclose()

    return lose


async def _delete_prefix(client: aioredis.Redis, backend: CommonSettings) -> None:
    keys = [key async for key in client.scan_iter(match=f"{backend.redis.key_prefix}*")]
    if keys:
        await client.delete(*keys)


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
    await store.claim("g1", 0, 1)  # a marker with nothing to rebuild: a complete snapshot
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
    await store.claim("g1", 0, 1)
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


# -- the marker: noticing a lost snapshot ---------------------------------------------------


async def test_claim_begins_a_generation_once(store: SnapshotStore) -> None:
    await store.write([], {0: 40})  # an unmarked snapshot (written before markers existed)
    first = await store.claim("g1", 3, 1000)
    assert (first.generation, first.partitions, first.since_ms) == ("g1", 3, 1000)
    assert first.rebuilding == {0, 1, 2} and not first.complete
    assert await store.watermarks() == {}, "a new generation starts its watermarks afresh"
    again = await store.claim("g2", 3, 2000)
    assert again == first, "an existing marker is returned, never replaced"
    assert await store.generation() == "g1"
    assert await store.marker() == first


async def test_a_write_under_a_lost_generation_is_refused(
    store: SnapshotStore, lose: Callable[[], Awaitable[None]]
) -> None:
    await store.claim("g1", 1, 1)
    assert await store.write([state("e1", "a1", 4)], {0: 4}, generation="g1", rebuilt=[0])
    await lose()
    assert await store.generation() is None
    assert not await store.write([state("e1", "a2", 5)], {0: 5}, generation="g1")
    assert await store.read_exam("e1", partial=True) == ([], {}), "nothing of it landed"
    await store.claim("g2", 1, 2)
    assert not await store.write([state("e1", "a2", 5)], {0: 5}, generation="g1")
    assert await store.write([state("e1", "a2", 5)], {0: 5}, generation="g2")
    # Unchecked writes (the audit tool's repair) still land, forward-only.
    assert await store.write([state("e1", "a3", 6)], {})


async def test_reads_refuse_a_snapshot_being_rebuilt(store: SnapshotStore) -> None:
    a1 = state("e1", "a1", 4)
    await store.claim("g1", 2, 1)
    assert await store.write([a1], {0: 4}, generation="g1", rebuilt=[0])
    with pytest.raises(SnapshotIncomplete) as incomplete:
        await store.read_exam("e1")
    assert incomplete.value.rebuilding == [1]
    assert await store.read_exam("e1", partial=True) == ([a1], {0: 4})
    assert await store.read_attempt("e1", "a1") == a1, "present: the state is as good as any"
    with pytest.raises(SnapshotIncomplete):
        await store.read_attempt("e1", "a2")  # absent: maybe just not re-folded yet
    assert await store.read_attempt("e1", "a2", partial=True) is None
    assert await store.write([], {}, generation="g1", rebuilt=[1])
    marker = await store.marker()
    assert marker is not None and marker.complete
    assert await store.read_exam("e1") == ([a1], {0: 4})
    assert await store.read_attempt("e1", "a2") is None


async def test_watermarks_without_a_marker_are_not_a_complete_snapshot(
    store: SnapshotStore,
) -> None:
    # The marker alone was lost (deleted, evicted): the watermarks no longer prove anything.
    await store.write([state("e1", "a1", 4)], {0: 4})
    with pytest.raises(SnapshotIncomplete) as incomplete:
        await store.read_exam("e1")
    assert incomplete.value.rebuilding is None
    with pytest.raises(SnapshotIncomplete):
        await store.read_attempt("e1", "a9")
