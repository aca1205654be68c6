"""Generated hostile frames: the gateway answers every one, and what it accepts every part can use.

One accepted frame that a consumer cannot apply stalls that consumer's partition for every
exam on it. So the property is end to end, in-process: a frame of any shape never makes
``interpret`` raise (a client gets an answer, not a dropped connection), and every event it
lets into the log:

- survives the log (encode, decode) unchanged;
- is routable by the router (its head parses, and matches the event);
- folds into an attempt's state (status service, gateways' views, replays), from nothing
  and on top of a state;
- is storable: the state survives Redis (JSON) and DynamoDB (the item codec, numbers within
  what DynamoDB takes);
- is readable by the notifier's alert rules;
- has an acknowledgement that is valid JSON naming its id.

Frames are drawn around the protocol's real fields, with values of every JSON type, the edges
of each bound, and strings that JSON, regexes and key schemes find awkward. CI draws 1,000
frames per identity, the same ones every run; a longer hunt:

    PROCTOR_FUZZ_EXAMPLES=30000 .venv/bin/python -m pytest \
        tests/hostile/test_any_accepted_frame.py --hypothesis-show-statistics
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as count_outcome
from hypothesis import strategies as st

from adapters.dynamo_store import from_item, to_item
from adapters.tokens import Identity, ProctorIdentity, StudentIdentity
from domain.alerts import AlertRules, AlertThresholds
from domain.attempt_state import apply
from domain.routing import EventHead
from schemas.events import MAX_EPOCH_MS, MAX_SAFE_INT, ExamEvent, decode_event, encode_event
from schemas.frames import encode_ack
from schemas.legacy import LEGACY_TYPE
from schemas.views import AttemptState
from services.gateway.protocol import ProctorCommand, Publish, Reject, interpret

NOW_MS = 1_709_294_400_000
EXAMS = ("exam-1", "exam-2")
STUDENTS: tuple[Identity, ...] = (
    StudentIdentity(role="student", sub="stu-1", exam="exam-1", attempt="att-1"),
    StudentIdentity(
        role="student", sub="stu-1", exam="exam-1", attempt="att-1", time_end=NOW_MS + 60_000
    ),
)
PROCTOR = ProctorIdentity(role="proctor", sub="proc-1", exams=EXAMS)
_DYNAMO_MAX = 1e126  # DynamoDB numbers: magnitude below 1e126, above 1e-130, 38 digits

_awkward_text = st.sampled_from(
    ["", " ", "a", "exam-1", "att-1", "x" * 129, "x" * 5000, "é", "\u0000", "\ud7ff", "😀",
     "a b", "a/b", "{x}", "*", "\n", "..", "-1", "1e5", "2024-03-01T12:00:00Z", "null"]
)  # fmt: skip
_edge_ints = st.sampled_from(
    [0, 1, -1, 2, 100_000, 100_001, 366 * 24 * 3600, 366 * 24 * 3600 + 1, 2**31, MAX_SAFE_INT,
     MAX_SAFE_INT + 1, MAX_EPOCH_MS, MAX_EPOCH_MS + 1, 2**63 - 1, -(2**63), NOW_MS]
)  # fmt: skip
_edge_floats = st.sampled_from(
    [0.0, -0.0, 0.5, 1e-7, 1e-130, 1e-200, 1e9, 1e9 + 1, 1e126, 1e300, 5e-324, 17.0]
)
_leaf = (
    st.none()
    | st.booleans()
    | _edge_ints
    | st.integers(min_value=-(2**64), max_value=2**64)
    | _edge_floats
    | st.floats(allow_nan=False, allow_infinity=False)
    | _awkward_text
    | st.text(max_size=40)
)
_json_tree = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


# Composite: the frames use these many times over, and a plain strategy's repr would repeat
# the whole tree each time (hypothesis warns past 30 kB).
@st.composite
def _json_value(draw: st.DrawFn) -> Any:
    return draw(_json_tree)


@st.composite
def _any_value(draw: st.DrawFn) -> Any:
    return draw(_leaf | _json_tree)


_json = _json_value()
_value = _any_value()
_ids = st.from_regex(r"\A[A-Za-z0-9._:@\-]{1,128}\Z")
_counts = st.integers(min_value=0, max_value=100_000)
_in_range: dict[str, st.SearchStrategy[Any]] = {
    "id": _ids,
    "seq": st.integers(min_value=1, max_value=MAX_SAFE_INT),
    "ts": st.integers(min_value=0, max_value=MAX_EPOCH_MS),
    "status": st.sampled_from(["active", "away"]),
    "question_current": _counts,
    "answered": _counts,
    "total": _counts,
    "time_remaining_s": st.integers(min_value=0, max_value=366 * 24 * 3600),
    "question": _counts,
    "answer": st.text(max_size=4000),
    "score": st.floats(min_value=0, max_value=1e9) | st.sampled_from([0.0, 1e-6, 1e9]),
    "exam": st.sampled_from([*EXAMS, "exam-9"]),
    "attempt": st.sampled_from(["att-1", "att-2"]) | _ids,
    "text": st.text(min_size=1, max_size=2000),
    "reason": st.text(max_size=500),
    "seconds": st.integers(min_value=1, max_value=24 * 3600),
}
# Each frame type's fields: (required, optional), as docs/protocol.md gives them.
_SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "status": (("id", "seq", "status"), ("ts",)),
    "progress": (
        ("id", "seq", "answered", "total"),
        ("ts", "question_current", "time_remaining_s"),
    ),
    "answer": (("id", "seq", "question", "answer"), ("ts",)),
    "submit": (("id", "seq"), ("ts", "score")),
    "heartbeat": ((), ()),
    "subscribe": (("exam",), ()),
    "unsubscribe": (("exam",), ()),
    "message": (("id", "exam", "attempt", "text"), ()),
    "announce": (("id", "exam", "text"), ()),
    "pause": (("id", "exam", "attempt"), ("reason",)),
    "resume": (("id", "exam", "attempt"), ()),
    "extend": (("id", "exam", "attempt", "seconds"), ()),
}


_STUDENT_KINDS = ("status", "progress", "answer", "submit", "heartbeat")


@st.composite
def _frames(draw: st.DrawFn, role: str) -> dict[str, Any]:
    """A frame of a real type with in-range fields, then (often) one thing made wrong:
    a field of any value or at an edge, a field dropped, a field added, or the type changed.
    Mostly the role's own types: other roles' frames are all refused the same way."""
    own = [k for k in sorted(_SHAPES) if (k in _STUDENT_KINDS) == (role == "student")]
    kind = draw(st.sampled_from(own) | st.sampled_from(own) | st.sampled_from(sorted(_SHAPES)))
    required, optional = _SHAPES[kind]
    frame: dict[str, Any] = {"type": kind}
    for name in required:
        frame[name] = draw(_in_range[name])
    for name in optional:
        if draw(st.booleans()):
            frame[name] = draw(_in_range[name])
    damage = draw(
        st.sampled_from(["none", "none", "none", "none", "value", "edge", "drop", "add", "type"])
    )
    names = sorted(frame)
    if damage == "value":
        frame[draw(st.sampled_from(names))] = draw(_value)
    elif damage == "edge":
        frame[draw(st.sampled_from(names))] = draw(_edge_ints | _edge_floats | _awkward_text)
    elif damage == "drop":
        del frame[draw(st.sampled_from(names))]
    elif damage == "add":
        frame[draw(st.sampled_from([*_in_range, "student", "source", "x"]))] = draw(_value)
    elif damage == "type":
        frame["type"] = draw(st.sampled_from(sorted(_SHAPES)) | _value)
    return frame


@st.composite
def _legacy_frames(draw: st.DrawFn) -> dict[str, Any]:
    """The seed's legacy frame, its quiz data of any value."""
    loose = _value | _edge_ints | _awkward_text
    data = st.fixed_dictionaries(
        {
            "quiz_id": st.just("exam-1") | _value,
            "quiz_attempt_id": st.just("att-1") | _value,
            "student_id": st.just("stu-1") | _value,
            "user_status": st.sampled_from(["active", "away", "offline"]) | _value,
        },
        optional={
            name: loose
            for name in (
                "question_answered", "question_total", "question_number_current", "score",
                "time_end", "time_start", "student_name", "quiz_result_id",
            )
        },
    )  # fmt: skip
    message = st.fixed_dictionaries(
        {"action": st.just("lmsQuizMonitoringStudent") | _value, "data": data}
    )
    return draw(st.fixed_dictionaries({"type": st.just(LEGACY_TYPE), "message": message}))


def _dumps(value: Any) -> bytes:
    # The standard library, not orjson: a client may send integers beyond 64 bits.
    return json.dumps(value, ensure_ascii=False).encode()


def _raw(role: str) -> st.SearchStrategy[bytes]:
    """Mostly frames near the protocol (that is where acceptance, and so the risk, is), then
    legacy frames, then anything at all."""
    framed = _frames(role).map(_dumps)
    return st.one_of(
        framed, framed, framed, framed, _legacy_frames().map(_dumps), _json.map(_dumps),
        st.binary(max_size=64),
    )  # fmt: skip


def _storable(value: object) -> bool:
    if isinstance(value, float):
        return value == 0 or 1e-130 <= abs(value) < _DYNAMO_MAX
    return True


def _assert_usable_downstream(event: ExamEvent, offset: int) -> None:
    raw = encode_event(event)
    assert decode_event(raw) == event
    assert EventHead.parse(raw) == EventHead.of(event)
    rules = AlertRules(AlertThresholds(), source_id="notifier-test")
    rules.on_event(event)
    rules.tick(event.ts + 3_600_000)
    fresh = apply(None, event, offset)
    earlier = apply(
        None,
        decode_event(
            encode_event(
                event.model_copy(update={"id": "earlier", "student": event.student or "stu-1"})
            )
        ),
        offset - 1,
    )
    on_top = apply(earlier, event, offset)
    for state in (fresh, on_top):
        if state is None:
            continue
        assert AttemptState.model_validate_json(state.model_dump_json()) == state
        view = state.view
        assert from_item(to_item(view)) == view
        assert all(_storable(v) for v in view.model_dump().values()), view
        for number in (v for v in view.model_dump().values() if isinstance(v, float)):
            assert math.isfinite(number)


@pytest.mark.parametrize(
    "who", [*STUDENTS, PROCTOR], ids=["student", "student-deadline", "proctor"]
)
@settings(
    # CI draws 1,000 per identity; a long hunt sets more (PROCTOR_FUZZ_EXAMPLES=30000).
    max_examples=int(os.environ.get("PROCTOR_FUZZ_EXAMPLES", "1000")),
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_any_frame_is_answered_and_what_is_accepted_every_part_can_use(
    who: Identity, data: st.DataObject
) -> None:
    raw = data.draw(_raw(who.role), label="raw")
    decision = interpret(raw, who, gateway=3, now_ms=NOW_MS, max_frame_bytes=4096)
    count_outcome(decision.error.code if isinstance(decision, Reject) else type(decision).__name__)
    if isinstance(decision, Reject):
        assert decision.error.code in {
            "bad_json", "bad_frame", "unknown_type", "not_allowed", "forbidden",
            "frame_too_large",
        }  # fmt: skip
        orjson.loads(decision.error.model_dump_json())
        return
    events: tuple[ExamEvent, ...] = ()
    ack_id: str | None = None
    if isinstance(decision, Publish):
        events, ack_id = decision.events, decision.ack_id
        assert decision.id_scope
    elif isinstance(decision, ProctorCommand):
        # The gateway names the attempt's student from the snapshot before publishing.
        events = (decision.event.model_copy(update={"student": "stu-1"}),)
        ack_id = decision.ack_id
    for offset, event in enumerate(events, start=10):
        _assert_usable_downstream(event, offset)
    if ack_id is not None:
        assert orjson.loads(encode_ack(ack_id)) == {"type": "ack", "id": ack_id}
