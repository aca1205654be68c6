"""Differences between the log's first attempts and DynamoDB, field by field."""

from __future__ import annotations

from audit.diff import diff_first_attempts
from schemas.views import StudentView


def view(student: str, **fields: object) -> StudentView:
    return StudentView.model_validate(
        {"exam": "e1", "attempt": f"a-{student}", "student": student} | fields
    )


def test_every_field_difference_missing_and_extra_item_is_reported() -> None:
    log = {"s1": view("s1", seq=5, answered=3), "s2": view("s2"), "s3": view("s3")}
    store = {"s1": view("s1", seq=4, answered=2), "s3": view("s3"), "s4": view("s4")}
    found = diff_first_attempts(log, store)
    assert [(d.student, d.kind, d.field, d.from_log, d.in_store) for d in found] == [
        ("s1", "field", "answered", 3, 2),
        ("s1", "field", "seq", 5, 4),
        ("s2", "missing", None, "a-s2", None),
        ("s4", "extra", None, None, "a-s4"),
    ]
    assert "answered: log 3 != DynamoDB 2" in found[0].describe()
    assert diff_first_attempts(log, log) == []
