"""The LTI tool in-process on 127.0.0.1 beside a real LTI 1.3 platform (lti1p3platform, on
``localhost``: another site), with Redis keys of its own for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer, unused_port

from adapters.settings import CommonSettings, RedisSettings
from adapters.tokens import TokenCodec
from services.lti.app import create_app
from services.lti.settings import LtiOptions, LtiSettings, PlatformSettings
from tests.conftest import unique
from tests.lti.platform import (
    INSTRUCTOR,
    LEARNER,
    TEACHING_ASSISTANT,
    Member,
    Platform,
    tool_endpoints,
)

SECRET = "lti-test-secret-0123456789abcdef0123456789"
CODEC = TokenCodec(SECRET)
COURSE = "phys-101"
EXAM_LINK = "midterm"
DASHBOARD_LINK = "proctoring"
LEARNERS = {"alice": "Alice Learner", "bob": "Bob Learner", "dan": "Dan Learner"}


@dataclass
class LtiPair:
    platform: Platform
    tool_url: str
    settings: LtiSettings
    redis: aioredis.Redis

    async def keys(self) -> list[str]:
        """Every Redis key the tool wrote for this test."""
        prefix = self.settings.redis.key_prefix
        return sorted([k.decode() async for k in self.redis.scan_iter(match=f"{prefix}*")])


def lti_settings(
    platform: Platform, tool_url: str, app_url: str, redis: RedisSettings, secret: str
) -> LtiSettings:
    return LtiSettings(
        redis=redis,
        lti=LtiOptions(
            public_url=tool_url,
            app_url=app_url,
            token_secret=secret,
            platforms=[
                PlatformSettings(
                    issuer=platform.issuer,
                    client_id=platform.client_id,
                    auth_login_url=platform.auth_url,
                    auth_token_url=platform.token_url,
                    key_set_url=platform.jwks_url,
                    deployment_ids=[platform.deployment_id],
                )
            ],
        ),
    )


def physics_course(platform: Platform, tool_url: str) -> None:
    endpoints = tool_endpoints(tool_url)
    platform.add_course(COURSE, "Physics 101")
    for user, name in LEARNERS.items():
        platform.enrol(COURSE, Member(user, name, [LEARNER]))
    platform.enrol(COURSE, Member("carol", "Carol Instructor", [INSTRUCTOR]))
    platform.enrol(COURSE, Member("tim", "Tim Assistant", [TEACHING_ASSISTANT]))
    platform.add_link(COURSE, EXAM_LINK, "Midterm", endpoints.exam_target, {"exam_minutes": "45"})
    platform.add_link(COURSE, DASHBOARD_LINK, "Proctor dashboard", endpoints.dashboard_target)


async def start_pair(
    infra: CommonSettings, app_url: str, *, secret: str = SECRET
) -> tuple[LtiPair, TestServer]:
    """The tool for gateways at ``app_url`` that trust ``secret``, and its platform."""
    port = unused_port()
    tool_url = f"http://127.0.0.1:{port}"
    platform = Platform(tool_endpoints(tool_url))
    physics_course(platform, tool_url)
    redis_settings = RedisSettings(url=infra.redis.url, key_prefix=f"{unique('lti')}:")
    settings = lti_settings(platform, tool_url, app_url, redis_settings, secret)
    server = TestServer(create_app(settings), host="127.0.0.1", port=port)
    await platform.start()
    await server.start_server()
    client = aioredis.Redis.from_url(infra.redis.url)
    return LtiPair(platform, tool_url, settings, client), server


async def stop_pair(pair: LtiPair, server: TestServer) -> None:
    prefix = pair.settings.redis.key_prefix
    async for key in pair.redis.scan_iter(match=f"{prefix}*"):
        await pair.redis.delete(key)
    await pair.redis.aclose()
    await server.close()
    await pair.platform.stop()


@pytest.fixture
async def lti(infra: CommonSettings) -> AsyncIterator[LtiPair]:
    pair, server = await start_pair(infra, app_url="http://127.0.0.1:9")
    try:
        yield pair
    finally:
        await stop_pair(pair, server)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No jar: each test says which cookies a request carries (a browser's are in tests/browser).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session
