"""Whom a connection's log line is about: exam and attempt (or proctor), never the token."""

from __future__ import annotations

from typing import Any

import jwt

from adapters.tokens import ProctorIdentity, StudentIdentity


def who(identity: StudentIdentity | ProctorIdentity) -> dict[str, object]:
    if isinstance(identity, StudentIdentity):
        return {"exam": identity.exam, "attempt": identity.attempt, "student": identity.sub}
    return {"proctor": identity.sub, "exams": list(identity.exams)}


def expired_claims(token: str | None) -> dict[str, Any]:
    """Whom an expired token was for. Only call this after the codec said ``token_expired``:
    it says so only once the signature checked out, so the claims are genuine."""
    try:
        claims = jwt.decode(token or "", options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    role = "student" if "exam" in claims else "proctor"
    names = {"exam": "exam", "attempt": "attempt", "sub": role}
    return {field: str(claims[key])[:200] for key, field in names.items() if key in claims}
