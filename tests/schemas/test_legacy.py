"""The seed's legacy student frame (paper 001, Figure 4): what it accepts and how it reads it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from schemas.legacy import LEGACY_TYPE, LegacyFrame

# 2024-03-01T12:00:00Z
DEADLINE_S = 1_709_294_400
DEADLINE_MS = DEADLINE_S * 1000


def legacy(**data: Any) -> dict[str, Any]:
    quiz: dict[str, Any] = {
        "quiz_id": "exam-1",
        "quiz_attempt_id": "att-1",
        "student_id": "stu-1",
        "user_status": "active",
    }
    quiz.update(data)
    return {
        "type": LEGACY_TYPE,
        "clientConnectionSocketId": "sock-1",
        "message": {"action": "lmsQuizMonitoringStudent", "data": quiz},
    }


def parse(frame: dict[str, Any]) -> LegacyFrame:
    return LegacyFrame.model_validate_json(orjson.dumps(frame))


@pytest.fixture
def new_york_time() -> Iterator[None]:
    """The gateway host's local zone must not change how a frame is read."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "America/New_York")
        time.tzset()
        yield
    time.tzset()


def test_the_figure_4_frame_is_accepted() -> None:
    frame = parse(
        legacy(
            quiz_participant_id="p-7",
            quiz_result_id="r-7",
            question_answered=3,
            question_total=10,
            question_number_current=4,
            score=None,
            student_name="Ada",
            time_end=DEADLINE_S,
            time_start=DEADLINE_S - 3600,
            topic_uuid="topic-1",
        )
    )
    quiz = frame.message.data

    assert (quiz.quiz_id, quiz.quiz_attempt_id, quiz.student_id) == ("exam-1", "att-1", "stu-1")
    assert (quiz.question_answered, quiz.question_total, quiz.question_number_current) == (3, 10, 4)
    assert quiz.time_end == DEADLINE_MS
    assert quiz.time_start == DEADLINE_MS - 3_600_000


@pytest.mark.parametrize(
    "time_end",
    [
        DEADLINE_MS,
        DEADLINE_S,
        str(DEADLINE_S),
        str(DEADLINE_MS),
        "2024-03-01T12:00:00Z",
        "2024-03-01T12:00:00+00:00",
        "2024-03-01T13:00:00+01:00",
        "2024-03-01T12:00:00.000Z",
    ],
)
def test_time_end_in_iso_epoch_seconds_or_epoch_ms_reads_as_epoch_ms(time_end: object) -> None:
    assert parse(legacy(time_end=time_end)).message.data.time_end == DEADLINE_MS


@pytest.mark.usefixtures("new_york_time")
def test_time_end_without_a_zone_reads_the_same_on_every_host() -> None:
    # Gateways in different zones must compute the same deadline for the same frame: UTC.
    assert parse(legacy(time_end="2024-03-01T12:00:00")).message.data.time_end == DEADLINE_MS


@pytest.mark.parametrize("empty", [None, ""])
def test_missing_time_end_is_none(empty: object) -> None:
    assert parse(legacy(time_end=empty)).message.data.time_end is None


def test_unreadable_time_end_is_rejected() -> None:
    with pytest.raises(ValidationError) as caught:
        parse(legacy(time_end="next tuesday"))
    assert [e["loc"][-1] for e in caught.value.errors()] == ["time_end"]


def test_numeric_ids_are_coerced_to_strings() -> None:
    quiz = parse(legacy(quiz_id=42, quiz_attempt_id=4711, student_id=7)).message.data

    assert (quiz.quiz_id, quiz.quiz_attempt_id, quiz.student_id) == ("42", "4711", "7")


@pytest.mark.parametrize("status", ["active", "away", "offline"])
def test_all_three_legacy_statuses_are_accepted(status: str) -> None:
    assert parse(legacy(user_status=status)).message.data.user_status == status


def test_unknown_status_is_rejected() -> None:
    with pytest.raises(ValidationError):
        parse(legacy(user_status="asleep"))


@pytest.mark.parametrize(
    "field", ["question_answered", "question_total", "question_number_current"]
)
def test_negative_counts_are_rejected(field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse(legacy(**{field: -1}))
    assert [e["loc"][-1] for e in caught.value.errors()] == [field]


@pytest.mark.parametrize("field", ["quiz_id", "quiz_attempt_id", "student_id"])
def test_the_ids_are_required(field: str) -> None:
    frame = legacy()
    del frame["message"]["data"][field]
    with pytest.raises(ValidationError) as caught:
        parse(frame)
    assert [(e["loc"][-1], e["type"]) for e in caught.value.errors()] == [(field, "missing")]


def test_unknown_fields_from_the_lms_are_tolerated() -> None:
    frame = legacy(browser="Firefox")
    frame["extra_top_level"] = True

    assert parse(frame).message.data.user_status == "active"


def test_other_actions_are_rejected() -> None:
    frame = legacy()
    frame["message"]["action"] = "lmsQuizMonitoringMaster"
    with pytest.raises(ValidationError):
        parse(frame)
