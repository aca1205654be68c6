"""A real gateway configured with an LMS's JWKS URL: tokens the LMS signs with its own key
connect like shared-secret ones; forged ones get ``token_invalid`` and write nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, WSMsgType
from aiohttp.test_utils import TestServer

from adapters.settings import CommonSettings
from services.gateway.app import create_app, server_options
from services.gateway.settings import GatewayOptions, GatewaySettings
from tests.adapters.test_jwks import (
    ATTACKER,
    AUDIENCE,
    EC_1,
    ISSUER,
    RSA_1,
    Lms,
    claims,
    hand_made,
    hmac_sha256,
    key_set,
)
from tests.services.gateway.conftest import SECRET, student_token
from tests.services.gateway.test_publish import next_frame, read_log

pytestmark = pytest.mark.integration


@pytest.fixture
async def lms() -> AsyncIterator[Lms]:
    server = Lms(key_set(RSA_1, EC_1))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def gateway(
    settings: CommonSettings, lms: Lms
) -> AsyncIterator[tuple[GatewaySettings, TestServer]]:
    gateway_settings = GatewaySettings(
        **settings.model_dump(),
        gateway=GatewayOptions(
            slot=1,
            token_secret=SECRET,
            token_jwks_url=lms.url,
            token_jwks_issuer=ISSUER,
            token_jwks_audience=AUDIENCE,
        ),
    )
    server = TestServer(create_app(gateway_settings), host="127.0.0.1")
    await server.start_server(**server_options(gateway_settings.gateway))
    yield gateway_settings, server
    await server.close()


async def test_lms_signed_and_shared_secret_tokens_get_the_normal_welcome(
    gateway: tuple[GatewaySettings, TestServer], lms: Lms
) -> None:
    _, server = gateway
    async with ClientSession() as http:
        for token, role in (
            (RSA_1.sign(claims(sub="stu-rs")), "student"),
            (EC_1.sign(claims("proctor")), "proctor"),
            (student_token(student="stu-hs"), "student"),
        ):
            async with http.ws_connect(server.make_url(f"/ws?token={token}")) as ws:
                welcome = await next_frame(ws)
                assert welcome["type"] == "welcome" and welcome["role"] == role
        async with http.get(server.make_url("/metrics")) as answer:
            metrics = await answer.text()
    assert 'gateway_jwks_refresh_total{outcome="ok"} 1.0' in metrics
    assert lms.requests == 1


@pytest.mark.parametrize(
    "token",
    [
        ATTACKER.sign(claims(), kid=RSA_1.kid),
        hand_made({"alg": "HS256", "kid": RSA_1.kid}, claims(), hmac_sha256(RSA_1.public_pem())),
        hand_made({"alg": "none", "kid": RSA_1.kid}, claims()),
        RSA_1.sign(claims(iss="https://other-lms.example")),
    ],
    ids=["forged-signature", "alg-confusion", "alg-none", "wrong-issuer"],
)
async def test_forged_lms_tokens_are_refused_and_write_nothing(
    gateway: tuple[GatewaySettings, TestServer], token: str
) -> None:
    settings, server = gateway
    async with ClientSession() as http:
        async with http.ws_connect(server.make_url(f"/ws?token={token}")) as ws:
            error = await next_frame(ws)
            assert error["type"] == "error" and error["code"] == "token_invalid"
            closing = await ws.receive()
            assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
            assert ws.close_code == 4401
    assert await read_log(settings) == []
