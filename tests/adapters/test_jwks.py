"""Tokens an LMS signs with its own key, checked against the key set it publishes (JWKS).

The key set is served by a real aiohttp server on loopback, which counts its requests; time
for the refetch rate limit is a settable clock, so nothing here sleeps to let it pass.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from adapters.jwks import JwksKeys, JwksUnavailable, parse_key_set
from adapters.tokens import (
    Identity,
    ProctorIdentity,
    StudentIdentity,
    TokenCodec,
    TokenError,
)

SECRET = "test-secret-0123456789abcdef0123456789"
ISSUER = "https://lms.example"
AUDIENCE = "proctoring"
MIN_REFRESH_S = 30.0


@dataclass(frozen=True)
class SigningKey:
    """One of the LMS's key pairs: it signs with the private half, publishes the public one."""

    kid: str
    alg: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        return jwt.encode(
            claims, self.private, algorithm=self.alg, headers={"kid": kid or self.kid}
        )


def rsa_key(kid: str, bits: int = 2048) -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=bits))


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


RSA_1 = rsa_key("rsa-2026-01")
RSA_2 = rsa_key("rsa-2026-02")  # what the LMS rotates to
EC_1 = ec_key("ec-2026-01")
ATTACKER = rsa_key("attacker")  # never published


def key_set(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.jwk() for key in keys]}


def claims(kind: str = "student", **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600}
    if kind == "student":
        base |= {"role": "student", "sub": "stu1", "exam": "exam1", "attempt": "att1"}
    else:
        base |= {"role": "proctor", "sub": "proc1", "exams": ["exam1", "exam2"]}
    return {**base, **changes}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(
    header: dict[str, Any],
    payload: dict[str, Any],
    sign: Callable[[bytes], bytes] | None = None,
) -> str:
    """A JWT assembled by hand, as an attacker would (PyJWT refuses to make these)."""
    signing_input = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(payload))}"
    signature = sign(signing_input.encode()) if sign is not None else b""
    return f"{signing_input}.{b64(signature)}"


def hmac_sha256(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda message: hmac.new(secret, message, hashlib.sha256).digest()


class Lms:
    """The LMS's key set endpoint on loopback: what it publishes, whether it listens, how
    often it was asked, and optionally a gate that holds every answer until opened."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.port = unused_port()
        self.url = f"http://127.0.0.1:{self.port}/.well-known/jwks.json"
        self.body = orjson.dumps(document)
        self.status = 200
        self.requests = 0
        self.gate: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None

    def publish(self, document: dict[str, Any] | bytes) -> None:
        self.body = document if isinstance(document, bytes) else orjson.dumps(document)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._serve)
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._runner = runner

    async def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve(self, _: web.Request) -> web.Response:
        self.requests += 1
        if self.gate is not None:
            await self.gate.wait()
        return web.Response(body=self.body, status=self.status, content_type="application/json")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def pass_min_refresh(self) -> None:
        self.now += MIN_REFRESH_S + 1


@pytest.fixture
async def lms() -> AsyncIterator[Lms]:
    server = Lms(key_set(RSA_1, EC_1))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def outcomes() -> list[str]:
    return []


def source(lms: Lms, clock: Clock, outcomes: list[str], timeout_s: float = 2.0) -> JwksKeys:
    return JwksKeys(
        lms.url,
        max_age_s=3600,
        min_refresh_s=MIN_REFRESH_S,
        timeout_s=timeout_s,
        on_refresh=outcomes.append,
        clock=clock,
    )


def codec_for(keys: JwksKeys | None) -> TokenCodec:
    return TokenCodec(SECRET, leeway_s=5, jwks=keys, jwks_issuer=ISSUER, jwks_audience=AUDIENCE)


@pytest.fixture
async def keys(lms: Lms, clock: Clock, outcomes: list[str]) -> AsyncIterator[JwksKeys]:
    """Started, with its first fetch done (the one request the server has seen)."""
    async with source(lms, clock, outcomes) as started:
        assert await started.refresh()
        assert lms.requests == 1
        yield started


@pytest.fixture
def codec(keys: JwksKeys) -> TokenCodec:
    return codec_for(keys)


async def refused(codec: TokenCodec, token: str) -> TokenError:
    with pytest.raises(TokenError) as caught:
        await codec.authenticate(token)
    return caught.value


# Accepted


@pytest.mark.parametrize("key", [RSA_1, EC_1], ids=["RS256", "ES256"])
async def test_student_and_proctor_tokens_signed_with_a_published_key_are_accepted(
    codec: TokenCodec, lms: Lms, key: SigningKey
) -> None:
    student = await codec.authenticate(key.sign(claims(name="Ada", attempt_no=2)))
    assert student == StudentIdentity(
        role="student", sub="stu1", exam="exam1", attempt="att1", attempt_no=2, name="Ada"
    )
    proctor = await codec.authenticate(key.sign(claims("proctor")))
    assert proctor == ProctorIdentity(role="proctor", sub="proc1", exams=("exam1", "exam2"))
    assert lms.requests == 1  # cached keys: no fetch per token


async def test_a_cached_kid_is_checked_without_waiting(codec: TokenCodec) -> None:
    # The coroutine finishes on its first step: nothing in it suspended (no network).
    coroutine = codec.authenticate(RSA_1.sign(claims()))
    with pytest.raises(StopIteration) as done:
        coroutine.send(None)
    identity: Identity = done.value.value
    assert identity.sub == "stu1"


async def test_shared_secret_tokens_work_as_before_beside_the_jwks(codec: TokenCodec) -> None:
    identity = StudentIdentity(role="student", sub="stu9", exam="exam1", attempt="att9")
    token = codec.issue(identity)
    issued = identity.model_copy(update={"jti": jwt.decode(token, SECRET, ["HS256"])["jti"]})
    assert await codec.authenticate(token) == issued
    assert codec.verify(token) == issued
    # The synchronous path knows only the secret.
    with pytest.raises(TokenError) as caught:
        codec.verify(RSA_1.sign(claims()))
    assert caught.value.code == "token_invalid"


async def test_an_expiry_within_the_leeway_is_accepted(codec: TokenCodec) -> None:
    token = RSA_1.sign(claims(exp=int(time.time()) - 2))
    assert (await codec.authenticate(token)).sub == "stu1"


# Rotation and the refetch rate limit


async def test_a_rotated_key_is_accepted_after_one_refetch(
    codec: TokenCodec, keys: JwksKeys, lms: Lms, clock: Clock, outcomes: list[str]
) -> None:
    clock.pass_min_refresh()
    lms.publish(key_set(RSA_2))
    identity = await codec.authenticate(RSA_2.sign(claims()))
    assert identity.sub == "stu1"
    assert lms.requests == 2
    assert keys.kids == {RSA_2.kid}
    assert outcomes == ["ok", "ok"]
    # Further tokens under the new key need no fetch; the retired key is gone.
    await codec.authenticate(RSA_2.sign(claims("proctor")))
    assert (await refused(codec, RSA_1.sign(claims()))).code == "token_invalid"
    assert lms.requests == 2


async def test_unknown_kids_refetch_at_most_once_per_min_refresh(
    codec: TokenCodec, lms: Lms, clock: Clock, outcomes: list[str]
) -> None:
    clock.pass_min_refresh()
    error = await refused(codec, ATTACKER.sign(claims(), kid="forged-1"))
    assert error.code == "token_invalid" and "forged-1" in str(error)
    assert lms.requests == 2
    clock.now += MIN_REFRESH_S - 2
    for n in range(2, 50):
        error = await refused(codec, ATTACKER.sign(claims(), kid=f"forged-{n}"))
        assert error.code == "token_invalid"
    assert lms.requests == 2
    assert outcomes == ["ok", "ok", *["throttled"] * 48]
    clock.now += 2
    assert (await refused(codec, ATTACKER.sign(claims(), kid="forged-50"))).code == (
        "token_invalid"
    )
    assert lms.requests == 3


async def test_concurrent_misses_share_one_fetch(codec: TokenCodec, lms: Lms, clock: Clock) -> None:
    clock.pass_min_refresh()
    lms.publish(key_set(RSA_1, RSA_2))
    lms.gate = asyncio.Event()
    tokens = [RSA_2.sign(claims(sub=f"stu{n}")) for n in range(20)]
    checks = [asyncio.create_task(codec.authenticate(token)) for token in tokens]
    while lms.requests < 2:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # every check is waiting now
    lms.gate.set()
    identities = await asyncio.gather(*checks)
    assert [identity.sub for identity in identities] == [f"stu{n}" for n in range(20)]
    assert lms.requests == 2


async def test_a_caller_that_gives_up_does_not_cancel_the_shared_fetch(
    codec: TokenCodec, lms: Lms, clock: Clock
) -> None:
    clock.pass_min_refresh()
    lms.publish(key_set(RSA_2))
    lms.gate = asyncio.Event()
    impatient = asyncio.create_task(codec.authenticate(RSA_2.sign(claims(sub="a"))))
    patient = asyncio.create_task(codec.authenticate(RSA_2.sign(claims(sub="b"))))
    while lms.requests < 2:
        await asyncio.sleep(0.01)
    impatient.cancel()  # its client hung up
    await asyncio.sleep(0.05)
    lms.gate.set()
    assert (await patient).sub == "b"
    assert impatient.cancelled()
    assert lms.requests == 2


# Refused


async def test_a_bad_signature_under_a_published_kid_is_refused(
    codec: TokenCodec, lms: Lms
) -> None:
    error = await refused(codec, ATTACKER.sign(claims(), kid=RSA_1.kid))
    assert error.code == "token_invalid" and "Signature verification failed" in str(error)
    error = await refused(codec, ec_key(EC_1.kid).sign(claims()))
    assert error.code == "token_invalid"
    assert lms.requests == 1  # a cached kid is not refetched


async def test_an_expired_token_is_refused_with_its_claims(codec: TokenCodec) -> None:
    expired = claims(exp=int(time.time()) - 60, attempt="att-late")
    error = await refused(codec, EC_1.sign(expired))
    assert error.code == "token_expired"
    assert error.expired["attempt"] == "att-late" and error.expired["sub"] == "stu1"


@pytest.mark.parametrize(
    "changes",
    [
        {"iss": "https://other-lms.example"},
        {"aud": "another-service"},
        {"aud": None},
        {"exp": None},
        {"role": None},
        {"iss": "https://other-lms.example", "exp": int(time.time()) - 60},
        {"aud": "another-service", "exp": int(time.time()) - 60},
        {"exam": None},
    ],
    ids=[
        "wrong-iss",
        "wrong-aud",
        "no-aud",
        "no-exp",
        "no-role",
        "expired-wrong-iss",
        "expired-wrong-aud",
        "no-exam",
    ],
)
async def test_claims_the_gateway_does_not_expect_are_refused(
    codec: TokenCodec, changes: dict[str, Any]
) -> None:
    bad = {name: value for name, value in claims(**changes).items() if value is not None}
    error = await refused(codec, RSA_1.sign(bad))
    assert error.code == "token_invalid" and not error.expired


async def test_without_a_configured_audience_a_token_naming_one_is_refused(
    keys: JwksKeys,
) -> None:
    codec = TokenCodec(SECRET, jwks=keys, jwks_issuer=ISSUER)
    assert (await refused(codec, RSA_1.sign(claims()))).code == "token_invalid"
    without_aud = {name: value for name, value in claims().items() if name != "aud"}
    assert (await codec.authenticate(RSA_1.sign(without_aud))).sub == "stu1"


async def test_hs256_signed_with_the_public_key_is_never_checked_against_the_jwks(
    codec: TokenCodec, lms: Lms
) -> None:
    """The classic algorithm confusion: the attacker knows the public key, signs HS256 with
    its PEM as the HMAC secret and names its kid, hoping the verifier uses it as a secret."""
    pem = RSA_1.public_pem()
    for secret_form in (pem, pem.strip()):
        token = hand_made(
            {"alg": "HS256", "typ": "JWT", "kid": RSA_1.kid},
            claims(),
            hmac_sha256(secret_form),
        )
        error = await refused(codec, token)
        assert error.code == "token_invalid" and "Signature verification failed" in str(error)
    # Nor is an HMAC under the PEM that claims to be RS256 taken for a signature.
    token = hand_made(
        {"alg": "RS256", "kid": RSA_1.kid},
        claims(),
        hmac_sha256(pem),
    )
    assert (await refused(codec, token)).code == "token_invalid"
    assert lms.requests == 1


async def test_a_symmetric_key_in_the_key_set_is_never_used(
    lms: Lms, clock: Clock, outcomes: list[str]
) -> None:
    shared = b"an-oct-key-the-lms-should-not-publish-0123456789"
    oct_key = {"kty": "oct", "kid": "sym", "k": b64(shared), "alg": "HS256"}
    lms.publish({"keys": [oct_key, RSA_1.jwk()]})
    async with source(lms, clock, outcomes) as keys:
        await keys.refresh()
        assert keys.kids == {RSA_1.kid}
        codec = codec_for(keys)
        for alg in ("HS256", "RS256"):
            token = hand_made(
                {"alg": alg, "kid": "sym"},
                claims(),
                hmac_sha256(shared),
            )
            assert (await refused(codec, token)).code == "token_invalid"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "", None])
async def test_alg_none_is_refused(codec: TokenCodec, alg: str | None) -> None:
    header: dict[str, Any] = {"typ": "JWT", "kid": RSA_1.kid}
    if alg is not None:
        header["alg"] = alg
    error = await refused(codec, hand_made(header, claims()))
    assert error.code == "token_invalid"


async def test_a_jwks_token_must_name_its_kid(codec: TokenCodec) -> None:
    token = jwt.encode(claims(), RSA_1.private, algorithm="RS256")
    error = await refused(codec, token)
    assert error.code == "token_invalid" and "kid" in str(error)


async def test_a_token_whose_alg_differs_from_its_keys_is_refused(codec: TokenCodec) -> None:
    # An ES256 signature labelled with the RSA key's kid, and PS256 over an RS256 key.
    assert (await refused(codec, EC_1.sign(claims(), kid=RSA_1.kid))).code == "token_invalid"
    ps256 = jwt.encode(claims(), RSA_1.private, algorithm="PS256", headers={"kid": RSA_1.kid})
    assert (await refused(codec, ps256)).code == "token_invalid"


async def test_without_a_jwks_url_only_the_secret_is_accepted() -> None:
    codec = codec_for(None)
    error = await refused(codec, RSA_1.sign(claims()))
    assert error.code == "token_invalid" and "JWKS" in str(error)
    assert (await refused(codec, "")).code == "token_missing"
    assert (await refused(codec, "not.a.jwt")).code == "token_invalid"


# The LMS unreachable


async def test_jwks_down_at_start_refuses_then_accepts_once_it_is_up(
    clock: Clock, outcomes: list[str]
) -> None:
    lms = Lms(key_set(RSA_1))
    async with source(lms, clock, outcomes) as keys:
        codec = codec_for(keys)
        error = await refused(codec, RSA_1.sign(claims()))
        assert error.code == "token_invalid" and "could not be fetched" in str(error)
        assert outcomes == ["failed"] and not keys.has_keys
        await lms.start()
        try:
            # Within min_refresh_s of the failure: no new fetch yet.
            assert (await refused(codec, RSA_1.sign(claims()))).code == "token_invalid"
            assert lms.requests == 0
            clock.pass_min_refresh()
            assert (await codec.authenticate(RSA_1.sign(claims()))).sub == "stu1"
            assert lms.requests == 1
            assert outcomes == ["failed", "throttled", "ok"]
        finally:
            await lms.stop()


async def test_jwks_down_after_a_good_fetch_keeps_the_cached_keys(
    codec: TokenCodec, keys: JwksKeys, lms: Lms, clock: Clock, outcomes: list[str]
) -> None:
    await lms.stop()
    clock.pass_min_refresh()
    assert not await keys.refresh()
    assert outcomes == ["ok", "failed"]
    assert (await codec.authenticate(RSA_1.sign(claims()))).sub == "stu1"
    assert (await codec.authenticate(EC_1.sign(claims("proctor")))).sub == "proc1"
    clock.pass_min_refresh()
    error = await refused(codec, RSA_2.sign(claims()))
    assert error.code == "token_invalid" and RSA_2.kid in str(error)
    assert outcomes == ["ok", "failed", "failed"]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b"oops"),
        (200, b"<html>not json</html>"),
        (200, b'{"no": "keys"}'),
        (200, b'{"keys": []}'),
        (200, b'{"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]}'),
        (200, b"[" * 300_000),
    ],
    ids=["http-500", "not-json", "no-keys-list", "empty", "only-symmetric", "too-large"],
)
async def test_a_bad_answer_keeps_the_last_good_key_set(
    codec: TokenCodec,
    keys: JwksKeys,
    lms: Lms,
    clock: Clock,
    outcomes: list[str],
    status: int,
    body: bytes,
) -> None:
    lms.status = status
    lms.publish(body)
    clock.pass_min_refresh()
    assert not await keys.refresh()
    assert outcomes == ["ok", "failed"]
    assert keys.kids == {RSA_1.kid, EC_1.kid}
    assert (await codec.authenticate(EC_1.sign(claims()))).sub == "stu1"


async def test_a_hanging_jwks_fetch_gives_up_after_the_timeout(
    lms: Lms, clock: Clock, outcomes: list[str]
) -> None:
    lms.gate = asyncio.Event()
    async with source(lms, clock, outcomes, timeout_s=0.2) as keys:
        started = time.monotonic()
        error = await refused(codec_for(keys), RSA_1.sign(claims()))
        assert error.code == "token_invalid"
        assert time.monotonic() - started < 2
        assert outcomes == ["failed"]


# The key set document


def test_only_public_asymmetric_signing_keys_with_a_kid_are_kept() -> None:
    small = rsa_key("rsa-1024", bits=1024)
    assert isinstance(RSA_2.private, rsa.RSAPrivateKey)
    private = {**RSA_2.jwk(), **RSAAlgorithm.to_jwk(RSA_2.private, as_dict=True), "kid": "private"}
    no_kid = {name: value for name, value in RSA_2.jwk().items() if name != "kid"}
    document = {
        "keys": [
            RSA_1.jwk(),
            EC_1.jwk(),
            {**RSA_1.jwk(), "kid": "encryption", "use": "enc"},
            {**RSA_1.jwk(), "kid": "rs512", "alg": "RS512"},
            {**RSA_1.jwk(), "kid": "pretends-hmac", "alg": "HS256"},
            {**EC_1.jwk(), "kid": "ec-none", "alg": "none"},
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            small.jwk(),
            private,
            no_kid,
            {**RSA_2.jwk(), "kid": RSA_1.kid},  # a repeated kid: the first stays
            "not a key",
        ]
    }
    keys = parse_key_set(orjson.dumps(document))
    assert set(keys) == {RSA_1.kid, EC_1.kid}
    assert keys[RSA_1.kid].algorithm_name == "RS256"
    assert keys[EC_1.kid].algorithm_name == "ES256"
    assert keys[RSA_1.kid].key.public_numbers() == RSA_1.private.public_key().public_numbers()


def test_a_key_set_without_usable_keys_is_an_error() -> None:
    with pytest.raises(JwksUnavailable):
        parse_key_set(orjson.dumps({"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]}))


@pytest.fixture(autouse=True)
async def _no_stray_tasks() -> AsyncIterator[None]:
    yield
    # Every JwksKeys closed its refresher and fetch: nothing of them is left running.
    assert not {"jwks-refresh", "jwks-fetch"} & {task.get_name() for task in asyncio.all_tasks()}
