"""Contract of the ``StatusStore`` port: DynamoDB Local and the in-memory fake answer alike."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.dynamo_store import (
    DynamoStatusStore,
    InMemoryStatusStore,
    StatusStore,
    StatusStoreUnavailable,
    from_item,
    to_item,
)
from adapters.settings import CommonSettings
from schemas.views import StudentView


@pytest.fixture(params=["memory", pytest.param("dynamodb", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> CommonSettings | None:
    if request.param == "memory":
        return None
    settings: CommonSettings = request.getfixturevalue("settings")
    return settings


@pytest.fixture
async def store(backend: CommonSettings | None) -> AsyncIterator[StatusStore]:
    if backend is None:
        yield InMemoryStatusStore()
        return
    real = DynamoStatusStore(backend.dynamo, workers=4)
    await real.open()
    try:
        yield real
    finally:
        await real.delete_table()
        await real.close()


def view(
    attempt: str = "a1",
    seq: int = 0,
    attempt_no: int = 1,
    student: str = "s1",
    exam: str = "e1",
    **fields: object,
) -> StudentView:
    return StudentView.model_validate(
        {"exam": exam, "attempt": attempt, "student": student, "seq": seq, "attempt_no": attempt_no}
        | fields
    )


async def test_absent_item_is_written_and_read_back(store: StatusStore) -> None:
    full = view(
        seq=7,
        name="Ada",
        status="away",
        submitted=True,
        score=91.25,
        question_current=3,
        answered=2,
        total=10,
        time_end=1_700_000_000_000,
        extended_s=300,
        away_count=1,
        away_since=1_699_999_999_000,
        gateway=2,
        started_at=1_699_999_000_000,
        updated_at=1_699_999_999_500,
    )
    [outcome] = await store.put_first_attempt([full])
    assert outcome.result == "written"
    assert await store.get("e1", "s1") == full
    assert await store.get("e1", "nobody") is None


async def test_newer_state_of_the_same_attempt_replaces_older(store: StatusStore) -> None:
    await store.put_first_attempt([view(seq=3, answered=1)])
    [outcome] = await store.put_first_attempt([view(seq=9, answered=4)])
    assert outcome.result == "written"
    stored = await store.get("e1", "s1")
    assert stored is not None and (stored.seq, stored.answered) == (9, 4)


async def test_replay_duplicate_and_older_state_are_refused(store: StatusStore) -> None:
    current = view(seq=9, answered=4)
    await store.put_first_attempt([current])
    outcomes = await store.put_first_attempt([view(seq=9, answered=4), view(seq=5, answered=2)])
    assert [o.result for o in outcomes] == ["refused", "refused"]
    # Both stores say who holds the item, so callers can stop offering hopeless writes.
    assert [o.holder for o in outcomes] == [current, current]
    assert await store.get("e1", "s1") == current


async def test_later_attempt_never_overwrites_the_first(store: StatusStore) -> None:
    first = view("a1", seq=3, attempt_no=1)
    await store.put_first_attempt([first])
    [outcome] = await store.put_first_attempt([view("a2", seq=50, attempt_no=2)])
    assert outcome.result == "refused"
    assert await store.get("e1", "s1") == first


async def test_first_attempt_processed_late_takes_its_place_back(store: StatusStore) -> None:
    await store.put_first_attempt([view("a2", seq=50, attempt_no=2)])
    first = view("a1", seq=3, attempt_no=1)
    [outcome] = await store.put_first_attempt([first])
    assert outcome.result == "written"
    assert await store.get("e1", "s1") == first
    [again] = await store.put_first_attempt([view("a2", seq=60, attempt_no=2)])
    assert again.result == "refused"


async def test_other_attempt_with_the_same_number_is_refused(store: StatusStore) -> None:
    first = view("a1", seq=3, attempt_no=1)
    await store.put_first_attempt([first])
    [outcome] = await store.put_first_attempt([view("b1", seq=80, attempt_no=1)])
    assert outcome.result == "refused"
    assert await store.get("e1", "s1") == first


async def test_many_items_in_one_call_and_scan_of_one_exam(store: StatusStore) -> None:
    views = [view(f"a{i}", seq=i, student=f"s{i:03d}") for i in range(60)]
    views.append(view("x", seq=1, student="s000", exam="other"))
    outcomes = await store.put_first_attempt(views)
    assert [o.result for o in outcomes] == ["written"] * 61
    scanned = await store.scan_exam("e1")
    assert sorted(scanned, key=lambda v: v.student) == views[:60]
    assert await store.scan_exam("nothing-here") == []


def test_item_codec_round_trips_every_field() -> None:
    full = view(
        seq=12, score=0.1, name="", offline_reason="gateway_lost", offline_since=5, paused=True
    )
    item = to_item(full)
    assert item["pk"] == {"S": "e1"} and item["sk"] == {"S": "s1"}
    assert "question_current" not in item  # None fields are left out
    assert from_item(item) == full


@pytest.mark.integration
async def test_an_unreachable_store_fails_each_write_and_raises_on_reads(
    settings: CommonSettings,
) -> None:
    # A port nothing listens on: every write is "failed" (retry later), never raises.
    closed = settings.dynamo.model_copy(update={"endpoint": "http://127.0.0.1:9"})
    real = DynamoStatusStore(closed, workers=2, timeout_s=2.0)
    await real.open(create_table=False)
    try:
        outcomes = await real.put_first_attempt([view(seq=1), view("a2", student="s2")])
        assert [o.result for o in outcomes] == ["failed", "failed"]
        assert all(o.error for o in outcomes)
        with pytest.raises(StatusStoreUnavailable):
            await real.get("e1", "s1")
        with pytest.raises(StatusStoreUnavailable):
            await real.ensure_table()
    finally:
        await real.close()


@pytest.mark.integration
async def test_a_number_dynamodb_cannot_hold_is_rejected_alone(settings: CommonSettings) -> None:
    real = DynamoStatusStore(settings.dynamo.model_copy(update={"table": "reject_probe"}))
    await real.open()
    try:
        outcomes = await real.put_first_attempt([view(score=1e308), view("a2", student="s2")])
        assert [o.result for o in outcomes] == ["rejected", "written"]
        assert outcomes[0].error is not None and "ValidationException" in outcomes[0].error
    finally:
        await real.delete_table()
        await real.close()
