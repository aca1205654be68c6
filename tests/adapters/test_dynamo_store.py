"""Contract of the ``StatusStore`` port: DynamoDB Local and the in-memory fake answer alike.

The real store runs each contract test twice: one PutItem per view (``transact_items=1``)
and TransactWriteItems of up to 25. The last tests script AWS's answers to a transaction
(shapes DynamoDB Local never produces) to pin down how each maps onto the outcomes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from itertools import zip_longest
from typing import Any

import pytest
from aiodynamo.errors import (
    AIODynamoError,
    ConditionalCheckFailed,
    Throttled,
    TransactionCanceled,
    UnknownError,
    ValidationException,
)

import adapters.dynamo_store
from adapters.dynamo_store import (
    DynamoStatusStore,
    InMemoryStatusStore,
    PutOutcome,
    StatusStore,
    StatusStoreUnavailable,
    from_item,
    to_item,
)
from adapters.settings import CommonSettings, DynamoSettings
from schemas.views import StudentView

TRANSACT_SIZES = [1, 25]


@pytest.fixture(
    params=[
        "memory",
        *(
            pytest.param(size, marks=pytest.mark.integration, id=f"dynamodb-transact{size}")
            for size in TRANSACT_SIZES
        ),
    ]
)
def backend(request: pytest.FixtureRequest) -> tuple[CommonSettings, int] | None:
    if request.param == "memory":
        return None
    settings: CommonSettings = request.getfixturevalue("settings")
    return settings, request.param


@pytest.fixture
async def store(backend: tuple[CommonSettings, int] | None) -> AsyncIterator[StatusStore]:
    if backend is None:
        yield InMemoryStatusStore()
        return
    settings, transact_items = backend
    real = DynamoStatusStore(settings.dynamo, workers=4, transact_items=transact_items)
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


async def test_a_mixed_batch_gets_each_outcome_in_input_order(store: StatusStore) -> None:
    # Before: p0..p9 at seq 10 of their attempt, q0..q2 hold their first attempt.
    before = {f"p{i}": view(f"a-p{i}", seq=10, student=f"p{i}") for i in range(10)}
    before |= {f"q{i}": view("q-first", seq=3, student=f"q{i}") for i in range(3)}
    assert {o.result for o in await store.put_first_attempt(list(before.values()))} == {"written"}

    Case = tuple[StudentView, str, StudentView | None]  # view, expected result, holder
    new: list[Case] = [
        (v, "written", v) for v in (view(f"a-n{i}", seq=i, student=f"n{i:02d}") for i in range(42))
    ]
    stale: list[Case] = [
        (view(f"a-p{i}", seq=5, student=f"p{i}"), "refused", before[f"p{i}"]) for i in range(5)
    ]
    replays: list[Case] = [(before[f"p{i}"], "refused", before[f"p{i}"]) for i in (5, 6)]
    later: list[Case] = [
        (view("q-second", seq=50, attempt_no=2, student=f"q{i}"), "refused", before[f"q{i}"])
        for i in range(3)
    ]
    newer: list[Case] = [
        (v, "written", v) for v in (view(f"a-p{i}", seq=12, student=f"p{i}") for i in (7, 8))
    ]
    # A score of 1e308 is beyond DynamoDB's numbers: ValidationException.
    overflow: list[Case] = [
        (view("a-p9", seq=12, student="p9", score=1e308), "rejected", None),
        (view("a-r0", seq=1, student="r0", score=1e308), "rejected", None),
    ]
    d0, d0_next, d1 = (
        view("a-d0", seq=1, student="d0"),
        view("a-d0", seq=2, student="d0"),
        view("a-d1", seq=1, student="d1"),
    )
    firsts: list[Case] = [(d0, "written", d0), (d1, "written", d1)]
    # The same key again in the same call: applied after the first, in input order.
    repeats: list[Case] = [(d0_next, "written", d0_next), (d1, "refused", d1)]

    # Each key's first view makes three transactions of 25 in order: the first is cancelled
    # by its refusals (its new views are sent again), the second spoiled by the overflowing
    # numbers (each view then goes as a PutItem), the third is all new. The repeats follow.
    part_a = interleave(new[:12], stale + replays + later + newer[:1] + firsts)
    part_b = interleave(new[12:34], newer[1:] + overflow)
    part_c = new[34:]
    assert (len(part_a), len(part_b), len(part_c)) == (25, 25, 8)
    batch = part_a + part_b[:10] + repeats[:1] + part_b[10:] + part_c + repeats[1:]

    outcomes = await store.put_first_attempt([v for v, _, _ in batch])

    assert [o.view for o in outcomes] == [v for v, _, _ in batch]
    assert [(o.result, o.holder) for o in outcomes] == [(r, h) for _, r, h in batch]
    rejected = [o for o in outcomes if o.result == "rejected"]
    assert len(rejected) == 2
    assert all(o.error and "ValidationException" in o.error for o in rejected)
    # Written views win over what was before; of d0's two, the later one.
    expected = before | {v.student: v for v, result, _ in batch if result == "written"}
    scanned = await store.scan_exam("e1")
    assert {v.student: v for v in scanned} == expected
    assert len(scanned) == len(expected) == 42 + 13 + 2
    assert await store.get("e1", "r0") is None


def interleave(*lists: list[Any]) -> list[Any]:
    return [x for group in zip_longest(*lists) for x in group if x is not None]


async def test_a_view_without_a_dynamodb_encoding_is_rejected_alone(
    store: StatusStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    encode = adapters.dynamo_store.to_item

    def to_item_failing_for_bad(v: StudentView) -> Any:
        if v.student == "bad":
            raise TypeError("no DynamoDB attribute for list")
        return encode(v)

    monkeypatch.setattr(adapters.dynamo_store, "to_item", to_item_failing_for_bad)
    views = [
        view("a-ok0", student="ok0"),
        view("a-bad", student="bad"),
        view("a-ok1", student="ok1"),
    ]
    outcomes = await store.put_first_attempt(views)
    assert [o.result for o in outcomes] == ["written", "rejected", "written"]
    assert outcomes[1].error == "TypeError: no DynamoDB attribute for list"
    assert [v.student for v in await store.scan_exam("e1")] == ["ok0", "ok1"]


def test_item_codec_round_trips_every_field() -> None:
    full = view(
        seq=12, score=0.1, name="", offline_reason="gateway_lost", offline_since=5, paused=True
    )
    item = to_item(full)
    assert item["pk"] == {"S": "e1"} and item["sk"] == {"S": "s1"}
    assert "question_current" not in item  # None fields are left out
    assert from_item(item) == full


@pytest.mark.integration
@pytest.mark.parametrize("transact_items", TRANSACT_SIZES)
async def test_an_unreachable_store_fails_each_write_and_raises_on_reads(
    settings: CommonSettings, transact_items: int
) -> None:
    # A port nothing listens on: every write is "failed" (retry later), never raises.
    closed = settings.dynamo.model_copy(update={"endpoint": "http://127.0.0.1:9"})
    real = DynamoStatusStore(closed, workers=2, timeout_s=2.0, transact_items=transact_items)
    await real.open(create_table=False)
    try:
        # 30 views: two transactions of up to 25 (or 30 PutItems).
        views = [view(f"a{i}", seq=i, student=f"s{i:02d}") for i in range(30)]
        outcomes = await real.put_first_attempt(views)
        assert [o.result for o in outcomes] == ["failed"] * 30
        assert [o.view for o in outcomes] == views
        assert all(o.error for o in outcomes)
        with pytest.raises(StatusStoreUnavailable):
            await real.get("e1", "s1")
        with pytest.raises(StatusStoreUnavailable):
            await real.ensure_table()
    finally:
        await real.close()


class CountingStore(DynamoStatusStore):
    """The real store, noting each request's action and how many Puts a transaction held."""

    def __init__(self, settings: DynamoSettings, **options: Any) -> None:
        super().__init__(settings, **options)
        self.sent: list[tuple[str, int]] = []

    async def _request(self, action: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        self.sent.append((action, len(payload.get("TransactItems", [payload]))))
        return await super()._request(action, payload)


@pytest.mark.integration
async def test_views_go_as_transactions_of_at_most_transact_items(
    settings: CommonSettings,
) -> None:
    real = CountingStore(settings.dynamo, workers=4, transact_items=25)
    await real.open()
    try:
        real.sent.clear()
        views = [view(f"a{i}", seq=i, student=f"s{i:02d}") for i in range(60)]
        outcomes = await real.put_first_attempt(views)
        assert [o.result for o in outcomes] == ["written"] * 60
        assert sorted(real.sent) == [("TransactWriteItems", n) for n in (10, 25, 25)]
        # A replay of all of them: three cancelled transactions say "refused" for each.
        real.sent.clear()
        again = await real.put_first_attempt(views)
        assert [(o.result, o.holder) for o in again] == [("refused", v) for v in views]
        assert sorted(real.sent) == [("TransactWriteItems", n) for n in (10, 25, 25)]
    finally:
        await real.delete_table()
        await real.close()


@pytest.mark.integration
@pytest.mark.parametrize("transact_items", TRANSACT_SIZES)
async def test_a_number_dynamodb_cannot_hold_is_rejected_alone(
    settings: CommonSettings, transact_items: int
) -> None:
    real = DynamoStatusStore(settings.dynamo, transact_items=transact_items)
    await real.open()
    try:
        outcomes = await real.put_first_attempt([view(score=1e308), view("a2", student="s2")])
        assert [o.result for o in outcomes] == ["rejected", "written"]
        assert outcomes[0].error is not None and "ValidationException" in outcomes[0].error
        assert [v.student for v in await real.scan_exam("e1")] == ["s2"]
    finally:
        await real.delete_table()
        await real.close()


# -- AWS's answers to a transaction, scripted -----------------------------------------------

Answer = Callable[[str, Mapping[str, Any]], dict[str, Any]]


class ScriptedStore(DynamoStatusStore):
    """No DynamoDB at all: ``answer`` plays it, request by request (it may raise)."""

    def __init__(self, answer: Answer, transact_items: int = 25) -> None:
        super().__init__(DynamoSettings(table="scripted"), transact_items=transact_items)
        self.answer = answer
        self.sent: list[tuple[str, list[str]]] = []

    async def _request(self, action: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        puts = (
            [p["Put"] for p in payload["TransactItems"]]
            if "TransactItems" in payload
            else [payload]
        )
        self.sent.append((action, [p["Item"]["sk"]["S"] for p in puts]))
        for put in puts:  # every Put carries the PutItem's condition and ALL_OLD
            assert put["ConditionExpression"] == adapters.dynamo_store._CONDITION
            assert put["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"
        return self.answer(action, payload)


def cancelled(*reasons: Mapping[str, Any]) -> TransactionCanceled:
    return TransactionCanceled(
        {
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "CancellationReasons": list(reasons),
            "Message": "Transaction cancelled, please refer cancellation reasons",
        }
    )


NONE = {"Code": "None"}
views4 = [view(f"a{i}", seq=1, student=f"s{i}") for i in range(4)]
holder = view("a1", seq=9, student="s1")


def refusal(item_of: StudentView | None) -> dict[str, Any]:
    reason: dict[str, Any] = {
        "Code": "ConditionalCheckFailed",
        "Message": "The conditional request failed",
    }
    if item_of is not None:
        reason["Item"] = to_item(item_of)
    return reason


async def test_aws_reasons_refused_rejected_and_the_rest_retried_without_them() -> None:
    def answer(action: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        if len(payload["TransactItems"]) == 4:
            raise cancelled(
                NONE,
                refusal(holder),
                {"Code": "ValidationError", "Message": "Number overflow"},
                NONE,
            )
        return {}

    store = ScriptedStore(answer)
    outcomes = await store.put_first_attempt(views4)
    assert [(o.result, o.holder) for o in outcomes] == [
        ("written", views4[0]),
        ("refused", holder),
        ("rejected", None),
        ("written", views4[3]),
    ]
    assert outcomes[2].error == "ValidationException: Number overflow"
    assert store.sent == [
        ("TransactWriteItems", ["s0", "s1", "s2", "s3"]),
        ("TransactWriteItems", ["s0", "s3"]),
    ]


async def test_reasons_not_understood_send_the_undecided_as_put_items() -> None:
    def answer(action: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        if action == "TransactWriteItems":
            raise cancelled(
                NONE,
                {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"},
                refusal(None),
                {"Code": "ThrottlingError", "Message": "Throughput exceeds the current capacity"},
            )
        if payload["Item"]["sk"]["S"] == "s3":
            raise ConditionalCheckFailed({"Item": to_item(holder)})
        return {}

    store = ScriptedStore(answer)
    outcomes = await store.put_first_attempt(views4)
    assert [(o.result, o.holder) for o in outcomes] == [
        ("written", views4[0]),
        ("written", views4[1]),
        ("refused", None),  # no Item in the reason: holder unknown
        ("refused", holder),
    ]
    assert store.sent[0] == ("TransactWriteItems", ["s0", "s1", "s2", "s3"])
    assert sorted(store.sent[1:]) == [("PutItem", ["s0"]), ("PutItem", ["s1"]), ("PutItem", ["s3"])]


async def test_retried_transactions_are_bounded_then_put_items_decide() -> None:
    def answer(action: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        if action == "TransactWriteItems":
            raise cancelled(*[NONE] * len(payload["TransactItems"]))
        return {}

    store = ScriptedStore(answer)
    outcomes = await store.put_first_attempt(views4)
    assert [o.result for o in outcomes] == ["written"] * 4
    actions = [action for action, _ in store.sent]
    assert (
        actions
        == ["TransactWriteItems"] * adapters.dynamo_store._TRANSACT_ATTEMPTS + ["PutItem"] * 4
    )


async def test_a_reason_list_that_does_not_match_the_puts_is_not_trusted() -> None:
    def answer(action: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        if action == "TransactWriteItems":
            raise cancelled(refusal(holder))  # one reason for four Puts
        return {}

    store = ScriptedStore(answer)
    outcomes = await store.put_first_attempt(views4)
    assert [o.result for o in outcomes] == ["written"] * 4
    assert [action for action, _ in store.sent] == ["TransactWriteItems"] + ["PutItem"] * 4


async def test_cancellation_reasons_aiodynamo_could_not_parse_are_still_read() -> None:
    # aiodynamo wants a Message in each reason; without one it raises UnknownError instead.
    body = {
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "CancellationReasons": [{"Code": "None"}, {"Code": "ConditionalCheckFailed"}],
    }

    def answer(action: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        if action == "TransactWriteItems":
            raise UnknownError(400, json.dumps(body).encode())
        return {}

    store = ScriptedStore(answer)
    outcomes = await store.put_first_attempt(views4[:2])
    assert [o.result for o in outcomes] == ["written", "refused"]
    # The one view left goes as a PutItem: half the write units of a transaction.
    assert store.sent == [("TransactWriteItems", ["s0", "s1"]), ("PutItem", ["s0"])]


@pytest.mark.parametrize(
    ("error", "result"),
    [
        (Throttled({"message": "Rate of requests exceeds the allowed throughput"}), "failed"),
        (UnknownError(400, b"<html>bad gateway</html>"), "failed"),
        (TimeoutError(), "failed"),
        (ValidationException({"message": "Number overflow"}), "written"),
    ],
)
async def test_whole_request_errors(error: Exception, result: str) -> None:
    # Validation: one unnamed item spoiled it, so each goes as a PutItem (here all fine).
    # Anything else says nothing of the items: all failed, and no PutItem is tried.
    def answer(action: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        if action == "TransactWriteItems":
            raise error
        return {}

    store = ScriptedStore(answer)
    outcomes: list[PutOutcome] = await store.put_first_attempt(views4)
    assert [o.result for o in outcomes] == [result] * 4
    puts = [a for a, _ in store.sent if a == "PutItem"]
    assert len(puts) == (4 if result == "written" else 0)
    if result == "failed":
        assert all(o.error for o in outcomes)
        assert isinstance(error, AIODynamoError | TimeoutError)


async def test_batches_are_at_most_transact_items_and_never_repeat_a_key() -> None:
    store = ScriptedStore(lambda action, payload: {}, transact_items=3)
    views = [view(f"a{i}", seq=1, student=f"s{i}") for i in range(7)]
    views.insert(2, view("a0", seq=2, student="s0"))  # s0 again, later in the call
    outcomes = await store.put_first_attempt(views)
    assert [o.result for o in outcomes] == ["written"] * 8
    assert sorted(store.sent[:3]) == [  # the first round: each key's first view
        ("PutItem", ["s6"]),
        ("TransactWriteItems", ["s0", "s1", "s2"]),
        ("TransactWriteItems", ["s3", "s4", "s5"]),
    ]
    assert store.sent[3:] == [("PutItem", ["s0"])]  # the repeat, after the first round


def test_transact_items_is_bounded_by_dynamodb_s_limit() -> None:
    with pytest.raises(ValueError, match="1 to 100"):
        DynamoStatusStore(DynamoSettings(), transact_items=101)
    with pytest.raises(ValueError, match="1 to 100"):
        DynamoStatusStore(DynamoSettings(), transact_items=0)
