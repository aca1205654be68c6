"""Signed identity tokens (JWT, HS256 by default) as the LMS issues them.

A student token names exam, attempt and student; a proctor token names the proctor and
the exams she may watch. The gateway trusts nothing else about identity.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.events import EpochMs, Id


class TokenError(Exception):
    """The token cannot be trusted; ``code`` is the protocol error code."""

    def __init__(
        self,
        code: Literal["token_missing", "token_invalid", "token_expired", "token_revoked"],
        why: str,
        *,
        expired: dict[str, Any] | None = None,
    ):
        super().__init__(why)
        self.code = code
        # token_expired only: the claims of a token whose signature did verify (genuine,
        # only too old), so a refusal can say whose it was.
        self.expired = expired or {}


class StudentIdentity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Literal["student"]
    sub: Id = Field(description="student id")
    exam: Id
    attempt: Id
    attempt_no: int = Field(default=1, ge=1)
    name: str = Field(default="", max_length=200)
    time_end: EpochMs | None = Field(default=None, description="attempt deadline")
    jti: Id | None = Field(default=None, description="token id, for revocation")


class ProctorIdentity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Literal["proctor"]
    sub: Id = Field(description="proctor id")
    exams: tuple[Id, ...] = Field(min_length=1)
    name: str = Field(default="", max_length=200)
    jti: Id | None = Field(default=None, description="token id, for revocation")


Identity = StudentIdentity | ProctorIdentity


class TokenCodec:
    def __init__(self, secret: str, *, algorithm: str = "HS256", issuer: str = "lms") -> None:
        if algorithm.startswith("HS") and len(secret.encode()) < 32:
            raise ValueError("an HMAC token secret must be at least 32 bytes (RFC 7518 3.2)")
        self._secret = secret
        self._algorithm = algorithm
        self._issuer = issuer

    def verify(self, token: str | None) -> Identity:
        if not token:
            raise TokenError("token_missing", "no token: pass ?token= or an Authorization header")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[self._algorithm],
                issuer=self._issuer,
                options={"require": ["exp", "sub", "role", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            # PyJWT checks the signature before the expiry: these claims are genuine.
            claims = jwt.decode(token, options={"verify_signature": False})
            raise TokenError("token_expired", "the token has expired", expired=claims) from exc
        except jwt.PyJWTError as exc:
            raise TokenError("token_invalid", f"the token is not valid: {exc}") from exc
        try:
            if claims.get("role") == "proctor":
                return ProctorIdentity.model_validate(claims)
            return StudentIdentity.model_validate(claims)
        except ValidationError as exc:
            raise TokenError("token_invalid", "the token lacks required claims") from exc

    def issue(self, identity: Identity, *, ttl_s: int = 4 * 3600) -> str:
        """Mint a token, as the LMS would; used by the demo, the simulator and tests."""
        now = int(time.time())
        claims = {
            "jti": uuid.uuid4().hex,
            **identity.model_dump(exclude_none=True),
            "iss": self._issuer,
            "iat": now,
            "exp": now + ttl_s,
        }
        return jwt.encode(claims, self._secret, algorithm=self._algorithm)
