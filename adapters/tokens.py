"""Signed identity tokens (JWT) as the LMS issues them: HS256 with a shared secret, or
signed with the LMS's own key and checked against its JWKS (``adapters.jwks``).

A student token names exam, attempt and student; a proctor token names the proctor and
the exams she may watch. The gateway trusts nothing else about identity.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import jwt
from jwt import PyJWK
from jwt.types import Options
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.jwks import ALGORITHMS as JWKS_ALGORITHMS
from adapters.jwks import JwksKeys
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
    """Checks identity tokens; mints them too, for the demo, the simulator and tests.

    ``verify`` checks a token against the shared secret (HS256) only, synchronously.
    ``authenticate`` is what the gateway checks a connect with: HS256 tokens against the
    secret as ``verify`` does, and, when a JWKS is configured, tokens the LMS signed with its
    own key (RS256, ES256, PS256, EdDSA) against the published key their ``kid`` names.
    The token's ``alg`` picks the path and each path accepts only its own algorithms, so an
    HS256 token (``kid`` or not) is never checked against JWKS material, and ``none`` never
    passes. Both paths require ``exp``, ``sub``, ``role`` and ``iss`` and yield the same
    identities.
    """

    def __init__(
        self,
        secret: str,
        *,
        algorithm: str = "HS256",
        issuer: str = "lms",
        leeway_s: float = 0.0,
        jwks: JwksKeys | None = None,
        jwks_issuer: str | None = None,
        jwks_audience: str | None = None,
    ) -> None:
        if algorithm.startswith("HS") and len(secret.encode()) < 32:
            raise ValueError("an HMAC token secret must be at least 32 bytes (RFC 7518 3.2)")
        self._secret = secret
        self._algorithm = algorithm
        self._issuer = issuer
        self._leeway_s = leeway_s
        self.jwks = jwks
        self._jwks_issuer = jwks_issuer if jwks_issuer is not None else issuer
        # None: a token that names an audience is refused (RFC 7519 4.1.3).
        self._jwks_audience = jwks_audience

    def verify(self, token: str | None) -> Identity:
        """The identity in a token signed with the shared secret."""
        claims = self._decode(_present(token), self._secret, self._algorithm, issuer=self._issuer)
        return _identity(claims)

    async def authenticate(self, token: str | None) -> Identity:
        """The identity in a token signed with the shared secret or a JWKS key.

        Waits on the network only for a ``kid`` that is not cached (see ``JwksKeys``).
        """
        token = _present(token)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError("token_invalid", f"the token is not valid: {exc}") from exc
        alg = header.get("alg")
        if alg == self._algorithm:
            return self.verify(token)
        if not isinstance(alg, str) or alg not in JWKS_ALGORITHMS:
            shown = alg[:20] if isinstance(alg, str) else type(alg).__name__
            raise TokenError("token_invalid", f"the token's algorithm {shown!r} is not accepted")
        if self.jwks is None:
            raise TokenError(
                "token_invalid", f"{alg} tokens are not accepted: no JWKS URL is configured"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("token_invalid", f"an {alg} token must name its key (kid)")
        key = self.jwks.cached(kid) or await self.jwks.lookup(kid)
        if key is None:
            if not self.jwks.has_keys:
                raise TokenError(
                    "token_invalid",
                    "the LMS's key set (JWKS) could not be fetched: tokens signed with its"
                    " keys cannot be checked yet",
                )
            raise TokenError("token_invalid", f"no key {kid[:64]!r} in the LMS's key set (JWKS)")
        claims = self._decode(
            token,
            key,
            key.algorithm_name,
            issuer=self._jwks_issuer,
            audience=self._jwks_audience,
            enforce_key_length=True,
        )
        return _identity(claims)

    def _decode(
        self,
        token: str,
        key: PyJWK | str,
        algorithm: str,
        *,
        issuer: str,
        audience: str | None = None,
        enforce_key_length: bool = False,
    ) -> dict[str, Any]:
        options: Options = {
            "require": ["exp", "sub", "role", "iss"],
            "enforce_minimum_key_length": enforce_key_length,
        }

        def decode(options: Options) -> dict[str, Any]:
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=issuer,
                audience=audience,
                leeway=self._leeway_s,
                options=options,
            )

        try:
            return decode(options)
        except jwt.ExpiredSignatureError as exc:
            # PyJWT checks the signature before the claims, but the expiry before the
            # issuer and audience: the claims are genuine if those hold too.
            try:
                claims = decode({**options, "verify_exp": False})
            except jwt.PyJWTError as again:
                raise TokenError("token_invalid", f"the token is not valid: {again}") from exc
            raise TokenError("token_expired", "the token has expired", expired=claims) from exc
        except jwt.PyJWTError as exc:
            raise TokenError("token_invalid", f"the token is not valid: {exc}") from exc

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


def _present(token: str | None) -> str:
    if not token:
        raise TokenError("token_missing", "no token: pass ?token= or an Authorization header")
    return token


def _identity(claims: dict[str, Any]) -> Identity:
    try:
        if claims.get("role") == "proctor":
            return ProctorIdentity.model_validate(claims)
        return StudentIdentity.model_validate(claims)
    except ValidationError as exc:
        raise TokenError("token_invalid", "the token lacks required claims") from exc
