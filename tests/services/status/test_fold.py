"""The status service's pure batch fold: watermarks, changed states, the Redis-ahead rule."""

from __future__ import annotations

from schemas.events import EventSource, ProctorAnnouncement, StudentConnected, StudentStatus
from schemas.views import AttemptState, StudentView
from services.status.fold import LogRecord, StateCache, ahead_of_log, fold, missing

SRC = EventSource(kind="student", id="s")


def connected(attempt: str, event_id: str) -> StudentConnected:
    return StudentConnected(
        id=event_id,
        exam="e1",
        attempt=attempt,
        student=f"stu-{attempt}",
        ts=1,
        source=SRC,
        conn="c",
        gateway=0,
    )


def away(attempt: str, event_id: str) -> StudentStatus:
    return StudentStatus(
        id=event_id,
        exam="e1",
        attempt=attempt,
        student=f"stu-{attempt}",
        ts=2,
        source=SRC,
        status="away",
    )


def test_watermarks_cover_every_record_even_unchanged_and_undecodable() -> None:
    cache = StateCache(100)
    records = [
        LogRecord(0, 10, connected("a1", "x1")),
        LogRecord(0, 11, None),
        LogRecord(
            1,
            5,
            ProctorAnnouncement(
                id="n",
                exam="e1",
                attempt=None,
                ts=3,
                source=EventSource(kind="proctor", id="p"),
                text="hi",
            ),
        ),
        LogRecord(0, 12, connected("a1", "x1")),  # resend of the same id: no change
    ]
    result = fold(records, cache)
    assert result.watermarks == {0: 12, 1: 5}
    assert list(result.changed) == [("e1", "a1")]
    assert result.changed[("e1", "a1")].view.seq == 10


def test_changed_holds_the_last_state_of_each_attempt_and_the_cache_follows() -> None:
    cache = StateCache(100)
    result = fold(
        [
            LogRecord(0, 1, connected("a1", "x1")),
            LogRecord(0, 2, away("a1", "x2")),
            LogRecord(1, 1, connected("a2", "y1")),
        ],
        cache,
    )
    assert {k: s.view.seq for k, s in result.changed.items()} == {("e1", "a1"): 2, ("e1", "a2"): 1}
    assert cache.get(("e1", "a1")) is result.changed[("e1", "a1")]
    # A replay of the same batch over the cache changes nothing.
    again = fold([LogRecord(0, 1, connected("a1", "x1")), LogRecord(0, 2, away("a1", "x2"))], cache)
    assert again.changed == {}
    assert again.watermarks == {0: 2}


def test_missing_names_uncached_attempts_with_their_first_offset() -> None:
    cache = StateCache(100)
    fold([LogRecord(0, 1, connected("a1", "x1"))], cache)
    records = [
        LogRecord(0, 7, away("a1", "x2")),
        LogRecord(2, 30, connected("a3", "z1")),
        LogRecord(2, 31, away("a3", "z2")),
        LogRecord(2, 32, None),
    ]
    assert missing(records, cache) == {("e1", "a3"): (2, 30)}


def test_loaded_state_at_or_past_the_batch_is_ahead_of_the_log() -> None:
    loaded = AttemptState(view=StudentView(exam="e1", attempt="a1", student="s", seq=40))
    assert ahead_of_log(loaded, 40)
    assert ahead_of_log(loaded, 12)
    assert not ahead_of_log(loaded, 41)


def test_cache_evicts_least_recent_on_trim_and_forgets_revoked_partitions() -> None:
    cache = StateCache(2)
    for partition, attempt in ((0, "a"), (1, "b"), (1, "c")):
        cache.put(
            ("e", attempt),
            partition,
            AttemptState(view=StudentView(exam="e", attempt=attempt, student="s")),
        )
    assert len(cache) == 3  # nothing leaves before the batch is safely in Redis
    cache.get(("e", "a"))
    cache.trim()
    assert ("e", "a") in cache and ("e", "c") in cache and ("e", "b") not in cache
    cache.forget_partitions({1})
    assert ("e", "c") not in cache and ("e", "a") in cache
