"""Field-by-field comparison of the first-attempt state from the log with what DynamoDB holds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from schemas.views import StudentView


@dataclass(frozen=True)
class Difference:
    student: str
    kind: Literal["missing", "extra", "field"]
    field: str | None = None
    from_log: object = None
    in_store: object = None

    def describe(self) -> str:
        if self.kind == "missing":
            return f"{self.student}: no item in DynamoDB (log has attempt {self.from_log})"
        if self.kind == "extra":
            return (
                f"{self.student}: item in DynamoDB (attempt {self.in_store}) but nothing in the log"
            )
        return f"{self.student}: {self.field}: log {self.from_log!r} != DynamoDB {self.in_store!r}"


def diff_first_attempts(
    from_log: Mapping[str, StudentView], in_store: Mapping[str, StudentView]
) -> list[Difference]:
    found: list[Difference] = []
    for student in sorted(set(from_log) | set(in_store)):
        expected, actual = from_log.get(student), in_store.get(student)
        if actual is None:
            assert expected is not None
            found.append(Difference(student, "missing", from_log=expected.attempt))
        elif expected is None:
            found.append(Difference(student, "extra", in_store=actual.attempt))
        else:
            found.extend(_fields(student, expected, actual))
    return found


def _fields(student: str, expected: StudentView, actual: StudentView) -> list[Difference]:
    ours, theirs = expected.model_dump(), actual.model_dump()
    return [
        Difference(student, "field", name, ours[name], theirs[name])
        for name in StudentView.model_fields
        if ours[name] != theirs[name]
    ]
