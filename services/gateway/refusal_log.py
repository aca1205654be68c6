"""Connections refused before they had a session, in the log: by exam and attempt, never
the token.

Connections that get a session log ``connected`` and ``disconnected`` (or ``refused`` when
the log is unavailable) from ``Session``. One refused earlier is logged here, from
aiohttp's access-log hook, which sees every finished WebSocket request (the WebSocket
handler, app.py, does not log its refusals). The close code cannot say why (the peer's
reply overwrites it, though browsers echo it), so the token is verified once more, for
refusals only: a token error names the refusal and, for an expired token whose signature did
verify, its exam and attempt; a token that verifies was refused for too many connects or
was revoked, which only a token with an id (``jti``) can be, and the echoed close code
tells which when the peer echoed it.
"""

from __future__ import annotations

from typing import Any

import jwt
import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from adapters.tokens import TokenError
from services.gateway.app import CODEC
from services.gateway.connection_log import HAS_SESSION, who
from services.gateway.connections import CLOSE_TOO_MANY_CONNECTS, CLOSE_UNAUTHORIZED
from services.gateway.protocol import claims_problem
from services.gateway.session import token_from

log = structlog.get_logger("services.gateway.session")


class RefusalLog(AbstractAccessLogger):
    """``web.run_app(access_log_class=RefusalLog)``: one ``refused`` line per refusal."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if not isinstance(response, web.WebSocketResponse) or not isinstance(request, web.Request):
            return
        if response.get(HAS_SESSION):
            return
        token = token_from(request)
        try:
            identity = request.app[CODEC].verify(token)
        except TokenError as exc:
            fields = _expired_claims(token) if exc.code == "token_expired" else {}
            log.info("refused", reason=exc.code, remote=request.remote, **fields)
            return
        if claims_problem(identity) is not None:
            reason = "token_invalid"
        elif response.close_code == CLOSE_UNAUTHORIZED:  # echoed by browsers
            reason = "token_revoked"
        elif response.close_code == CLOSE_TOO_MANY_CONNECTS or identity.jti is None:
            reason = "too_many_connects"
        else:
            reason = "too_many_connects_or_token_revoked"
        log.info("refused", reason=reason, remote=request.remote, **who(identity))


def _expired_claims(token: str | None) -> dict[str, Any]:
    # verify() says token_expired only once the signature checked out: the claims are genuine.
    try:
        claims = jwt.decode(token or "", options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    role = "student" if "exam" in claims else "proctor"
    names = {"exam": "exam", "attempt": "attempt", "sub": role}
    return {field: str(claims[key])[:200] for key, field in names.items() if key in claims}
