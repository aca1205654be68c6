"""Whom a connection's log line is about: exam and attempt (or proctor), never the token."""

from __future__ import annotations

from aiohttp import web

from adapters.tokens import ProctorIdentity, StudentIdentity

# Set on the WebSocket response by the session it got, so the refusal log (refusal_log.py),
# which sees every finished request, knows which ones were refused before having one.
HAS_SESSION = web.ResponseKey("has_session", bool)


def who(identity: StudentIdentity | ProctorIdentity) -> dict[str, object]:
    if isinstance(identity, StudentIdentity):
        return {"exam": identity.exam, "attempt": identity.attempt, "student": identity.sub}
    return {"proctor": identity.sub, "exams": list(identity.exams)}
