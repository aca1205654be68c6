"""Whom a connection's log line is about: exam and attempt (or proctor), never the token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.tokens import ProctorIdentity, StudentIdentity


def who(identity: StudentIdentity | ProctorIdentity) -> dict[str, object]:
    if isinstance(identity, StudentIdentity):
        return {"exam": identity.exam, "attempt": identity.attempt, "student": identity.sub}
    return {"proctor": identity.sub, "exams": list(identity.exams)}


def expired_whom(claims: Mapping[str, Any]) -> dict[str, str]:
    """Whom an expired (but genuine) token was for, from its claims."""
    role = "student" if "exam" in claims else "proctor"
    names = {"exam": "exam", "attempt": "attempt", "sub": role}
    return {field: str(claims[key])[:200] for key, field in names.items() if key in claims}
