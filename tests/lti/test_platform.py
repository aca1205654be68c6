"""Self-tests of the LTI 1.3 test platform (tests/lti/platform.py) against a tiny fake tool.

The fake tool is an aiohttp app on 127.0.0.1: ``/login`` answers the platform's initiation with a
redirect to the platform's ``/auth`` (a fresh state and nonce), ``/launch`` records the form the
platform's page posts, ``/jwks.json`` serves the tool's RSA key (what ``/token`` checks client
assertions against).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.types import Options

from tests.lti.platform import (
    CONTEXT_CLAIM,
    CUSTOM_CLAIM,
    DEPLOYMENT_CLAIM,
    INSTRUCTOR,
    LEARNER,
    MESSAGE_TYPE_CLAIM,
    MUTATIONS,
    NRPS_CLAIM,
    NRPS_MEDIA_TYPE,
    NRPS_SCOPE,
    RESOURCE_LINK_CLAIM,
    ROLES_CLAIM,
    SESSION_COOKIE,
    TARGET_LINK_URI_CLAIM,
    VERSION_CLAIM,
    AuthRefused,
    Member,
    Platform,
    ToolEndpoints,
    authorize,
    begin_login,
    forge_launch,
    message_hint,
    parse_launch_form,
)

COURSE = "algebra-1"
TOOL_KID = "fake-tool-key-1"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MEMBERS = [
    Member("alice", "Alice Learner", [LEARNER]),
    Member("bob", "Bob Learner", [LEARNER]),
    Member("carol", "Carol Instructor", [INSTRUCTOR]),
]


@cache
def _private_pem(name: str) -> str:
    """An RSA key per name, made once per run (the tool's, and a stranger's)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _public_jwk(private_pem: str, kid: str) -> dict[str, Any]:
    private = serialization.load_pem_private_key(private_pem.encode(), None)
    assert isinstance(private, rsa.RSAPrivateKey)
    jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


@dataclass
class FakeTool:
    base: str = ""
    platform: Platform | None = None
    logins: list[dict[str, str]] = field(default_factory=list)
    launches: list[dict[str, str]] = field(default_factory=list)

    @property
    def endpoints(self) -> ToolEndpoints:
        return ToolEndpoints(
            login_url=f"{self.base}/lti/login",
            launch_url=f"{self.base}/lti/launch",
            jwks_url=f"{self.base}/lti/jwks.json",
            exam_target=f"{self.base}/lti/exam",
            dashboard_target=f"{self.base}/lti/dashboard",
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/lti/login", self._login)
        app.router.add_post("/lti/launch", self._launch)
        app.router.add_get("/lti/jwks.json", self._jwks)
        return app

    async def _login(self, request: web.Request) -> web.Response:
        params = dict(request.query) if request.method == "GET" else dict(await request.post())
        login = {k: v for k, v in params.items() if isinstance(v, str)}
        self.logins.append(login)
        assert self.platform is not None
        state, nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        auth = {
            "scope": "openid",
            "response_type": "id_token",
            "response_mode": "form_post",
            "prompt": "none",
            "client_id": login["client_id"],
            "redirect_uri": self.endpoints.launch_url,
            "login_hint": login["login_hint"],
            "lti_message_hint": login["lti_message_hint"],
            "state": state,
            "nonce": nonce,
        }
        response = web.Response(
            status=302, headers={"Location": f"{self.platform.auth_url}?{urlencode(auth)}"}
        )
        response.set_cookie("tool_state", state, httponly=True)
        return response

    async def _launch(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.launches.append({k: v for k, v in form.items() if isinstance(v, str)})
        return web.Response(text="launched")

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [_public_jwk(_private_pem("tool"), TOOL_KID)]})


@pytest.fixture
async def tool() -> AsyncIterator[FakeTool]:
    fake = FakeTool()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.base = str(server.make_url("/")).rstrip("/")
    try:
        yield fake
    finally:
        await server.close()


@pytest.fixture
async def platform(tool: FakeTool) -> AsyncIterator[Platform]:
    lms = Platform(tool.endpoints)
    tool.platform = lms
    lms.add_course(COURSE, "Algebra I", "ALG1")
    for member in MEMBERS:
        lms.enrol(COURSE, member)
    lms.add_link(COURSE, "exam-1", "Midterm", tool.endpoints.exam_target, {"exam_id": "midterm"})
    lms.add_link(COURSE, "proctoring", "Proctor dashboard", tool.endpoints.dashboard_target)
    async with lms:
        yield lms


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def _platform_keys(session: aiohttp.ClientSession, platform: Platform) -> jwt.PyJWKSet:
    async with session.get(platform.jwks_url) as resp:
        assert resp.status == 200
        return jwt.PyJWKSet.from_dict(await resp.json())


def _unverified(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


# ---- the OIDC initiation and the launch -------------------------------------------------------


async def test_the_initiation_redirect_carries_the_login_parameters(
    platform: Platform, tool: FakeTool, session: aiohttp.ClientSession
) -> None:
    assert urlsplit(platform.issuer).hostname == "localhost"
    url = platform.launch_url_for("alice", COURSE, "exam-1")
    async with session.get(url, allow_redirects=False) as resp:
        assert resp.status == 302
        location = urlsplit(resp.headers["Location"])
        cookie = resp.cookies[SESSION_COOKIE]
    assert f"{location.scheme}://{location.netloc}{location.path}" == tool.endpoints.login_url
    assert dict(parse_qsl(location.query)) == {
        "iss": platform.issuer,
        "login_hint": "alice",
        "target_link_uri": tool.endpoints.exam_target,
        "lti_message_hint": message_hint(COURSE, "exam-1"),
        "client_id": "proctor-tool",
        "lti_deployment_id": "dep-1",
    }
    assert cookie.value and cookie["httponly"] and cookie["samesite"] == "Lax"


async def test_initiation_refuses_a_stranger_and_an_unknown_link(
    platform: Platform, session: aiohttp.ClientSession
) -> None:
    async with session.get(
        platform.launch_url_for("mallory", COURSE, "exam-1"), allow_redirects=False
    ) as resp:
        assert resp.status == 403
    async with session.get(
        platform.launch_url_for("alice", COURSE, "nope"), allow_redirects=False
    ) as resp:
        assert resp.status == 404


@pytest.mark.parametrize(
    ("user_id", "link_id", "roles", "custom"),
    [
        ("alice", "exam-1", [LEARNER], {"exam_id": "midterm"}),
        ("carol", "proctoring", [INSTRUCTOR], None),
    ],
)
async def test_a_genuine_launch_verifies_against_the_platform_jwks(
    platform: Platform,
    tool: FakeTool,
    session: aiohttp.ClientSession,
    user_id: str,
    link_id: str,
    roles: list[str],
    custom: dict[str, str] | None,
) -> None:
    auth = await begin_login(platform, session, user_id=user_id, context_id=COURSE, link_id=link_id)
    assert auth.url.startswith(platform.auth_url + "?")
    assert (auth.client_id, auth.redirect_uri, auth.login_hint) == (
        "proctor-tool",
        tool.endpoints.launch_url,
        user_id,
    )
    assert auth.cookies == {"tool_state": auth.state}

    form = await authorize(platform, session, auth)
    assert form.action == tool.endpoints.launch_url
    assert set(form.fields) == {"id_token", "state"}
    assert form.fields["state"] == auth.state
    assert platform.auth_requests[-1]["accepted"]
    assert platform.auth_requests[-1]["session_user"] == user_id  # the lms_session cookie

    keys = await _platform_keys(session, platform)
    header = jwt.get_unverified_header(form.fields["id_token"])
    assert header["alg"] == "RS256" and header["kid"] == platform.kid
    claims = jwt.decode(
        form.fields["id_token"],
        keys[header["kid"]].key,
        algorithms=["RS256"],
        audience="proctor-tool",
        issuer=platform.issuer,
        options={"require": ["exp", "iat", "sub", "aud", "iss", "nonce"]},
    )
    link_title = {"exam-1": "Midterm", "proctoring": "Proctor dashboard"}[link_id]
    target = {"exam-1": tool.endpoints.exam_target, "proctoring": tool.endpoints.dashboard_target}
    member = next(m for m in MEMBERS if m.user_id == user_id)
    assert claims["nonce"] == auth.nonce
    assert claims["azp"] == "proctor-tool"
    assert claims["sub"] == user_id and claims["name"] == member.name
    assert claims[MESSAGE_TYPE_CLAIM] == "LtiResourceLinkRequest"
    assert claims[VERSION_CLAIM] == "1.3.0"
    assert claims[DEPLOYMENT_CLAIM] == "dep-1"
    assert claims[TARGET_LINK_URI_CLAIM] == target[link_id]
    assert claims[ROLES_CLAIM] == roles
    assert claims[CONTEXT_CLAIM]["id"] == COURSE and claims[CONTEXT_CLAIM]["title"] == "Algebra I"
    assert claims[RESOURCE_LINK_CLAIM] == {"id": link_id, "title": link_title}
    assert claims.get(CUSTOM_CLAIM) == custom
    assert claims[NRPS_CLAIM] == {
        "context_memberships_url": f"{platform.issuer}/nrps/{COURSE}/memberships",
        "service_versions": ["2.0"],
    }
    assert 0 < claims["exp"] - claims["iat"] <= 300

    # What the browser's auto-submit does: the tool receives exactly the form.
    async with session.post(form.action, data=form.fields) as resp:
        assert resp.status == 200
    assert tool.launches == [form.fields]


async def test_the_auth_endpoint_takes_a_form_post_and_a_request_without_a_session(
    platform: Platform, session: aiohttp.ClientSession
) -> None:
    auth = await begin_login(platform, session, user_id="bob", context_id=COURSE, link_id="exam-1")
    posted = await authorize(platform, session, auth, method="POST")
    assert _unverified(posted.fields["id_token"])["sub"] == "bob"
    async with aiohttp.ClientSession() as cookieless:
        form = await authorize(platform, cookieless, auth)
    assert platform.auth_requests[-1]["session_user"] is None
    assert _unverified(form.fields["id_token"])["nonce"] == auth.nonce


@pytest.mark.parametrize(
    ("changes", "status", "reason"),
    [
        ({"redirect_uri": "{tool}/lti/elsewhere"}, 400, "is not the registered launch URL"),
        ({"redirect_uri": "http://evil.invalid/lti/launch"}, 400, "registered launch URL"),
        ({"client_id": "another-tool"}, 400, "client_id 'another-tool' is not registered"),
        ({"nonce": ""}, 400, "nonce missing"),
        ({"state": ""}, 400, "state missing"),
        ({"scope": "profile"}, 400, "openid"),
        ({"response_type": "code"}, 400, "response_type"),
        ({"response_mode": "query"}, 400, "response_mode"),
        ({"prompt": "login"}, 400, "prompt"),
        ({"login_hint": "bob"}, 403, "is not the signed-in user 'alice'"),
        ({"lti_message_hint": "garbage"}, 400, "lti_message_hint"),
        ({"lti_message_hint": message_hint(COURSE, "nope")}, 404, "no link 'nope'"),
    ],
)
async def test_the_auth_endpoint_refuses_a_bad_request(
    platform: Platform,
    tool: FakeTool,
    session: aiohttp.ClientSession,
    changes: dict[str, str],
    status: int,
    reason: str,
) -> None:
    auth = await begin_login(
        platform, session, user_id="alice", context_id=COURSE, link_id="exam-1"
    )
    auth.params.update({k: v.format(tool=tool.base) for k, v in changes.items()})
    with pytest.raises(AuthRefused) as refused:
        await authorize(platform, session, auth)
    assert refused.value.status == status
    assert reason in refused.value.reason
    assert not platform.auth_requests[-1]["accepted"]
    assert reason in platform.auth_requests[-1]["reason"]


async def test_without_a_session_the_login_hint_must_be_enrolled(
    platform: Platform, session: aiohttp.ClientSession
) -> None:
    auth = await begin_login(
        platform, session, user_id="alice", context_id=COURSE, link_id="exam-1"
    )
    auth.params["login_hint"] = "mallory"
    async with aiohttp.ClientSession() as cookieless:
        with pytest.raises(AuthRefused) as refused:
            await authorize(platform, cookieless, auth)
    assert refused.value.status == 403 and "not enrolled" in refused.value.reason


async def test_the_course_page_links_to_the_launches(
    platform: Platform, session: aiohttp.ClientSession
) -> None:
    async with session.get(platform.course_url(COURSE, "alice")) as resp:
        assert resp.status == 200
        page = await resp.text()
        assert SESSION_COOKIE in resp.cookies
    for link_id in ("exam-1", "proctoring"):
        href = platform.launch_url_for("alice", COURSE, link_id).replace("&", "&amp;")
        assert f'href="{href}"' in page
    assert "Alice Learner" in page
    async with session.get(platform.course_url(COURSE)) as resp:
        listing = await resp.text()
    assert all(m.name in listing for m in MEMBERS)


# ---- forged launches --------------------------------------------------------------------------


async def test_a_genuine_forged_launch_is_what_the_auth_endpoint_answers(
    platform: Platform, session: aiohttp.ClientSession
) -> None:
    auth = await begin_login(
        platform, session, user_id="alice", context_id=COURSE, link_id="exam-1"
    )
    form = await authorize(platform, session, auth)
    forged = forge_launch(
        platform,
        user_id="alice",
        context_id=COURSE,
        link_id="exam-1",
        nonce=auth.nonce,
        state=auth.state,
    )
    assert forged["state"] == form.fields["state"]
    assert jwt.get_unverified_header(forged["id_token"]) == jwt.get_unverified_header(
        form.fields["id_token"]
    )
    assert (
        _differing(_unverified(forged["id_token"]), _unverified(form.fields["id_token"])) == set()
    )


def _differing(a: dict[str, Any], b: dict[str, Any]) -> set[str]:
    """Claims that differ (or are in one only), iat and exp aside."""
    return {k for k in a.keys() | b.keys() if k not in ("iat", "exp") and a.get(k) != b.get(k)}


EXPECTED_DIFFERENCE = {
    "bad_signature": set(),
    "unknown_kid": set(),
    "wrong_audience": {"aud", "azp"},
    "expired": set(),
    "unknown_deployment": {DEPLOYMENT_CLAIM},
    "no_message_type": {MESSAGE_TYPE_CLAIM},
    "wrong_version": {VERSION_CLAIM},
    "no_nonce": {"nonce"},
    "wrong_issuer": {"iss"},
}


def test_every_mutation_has_an_expectation() -> None:
    assert set(EXPECTED_DIFFERENCE) == set(MUTATIONS)


@pytest.mark.parametrize("mutation", MUTATIONS)
async def test_a_forged_launch_differs_exactly_as_named(
    platform: Platform, session: aiohttp.ClientSession, mutation: str
) -> None:
    launch = {"user_id": "alice", "context_id": COURSE, "link_id": "exam-1"}
    genuine = forge_launch(platform, **launch, nonce="n-1", state="s-1")
    forged = forge_launch(platform, **launch, nonce="n-1", state="s-1", mutation=mutation)
    assert forged["state"] == "s-1"
    before, after = _unverified(genuine["id_token"]), _unverified(forged["id_token"])
    assert _differing(before, after) == EXPECTED_DIFFERENCE[mutation]

    keys = await _platform_keys(session, platform)
    header = jwt.get_unverified_header(forged["id_token"])
    assert header["alg"] == "RS256"
    verify: Options = {"verify_aud": False, "verify_iss": False, "verify_exp": False}
    if mutation in ("bad_signature", "unknown_kid"):
        assert (header["kid"] == platform.kid) == (mutation == "bad_signature")
        assert (header["kid"] in {k.key_id for k in keys.keys}) == (mutation == "bad_signature")
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(forged["id_token"], keys[platform.kid].key, ["RS256"], options=verify)
    else:
        assert header == jwt.get_unverified_header(genuine["id_token"])
        jwt.decode(forged["id_token"], keys[platform.kid].key, ["RS256"], options=verify)

    now = time.time()
    if mutation == "expired":
        assert after["iat"] < after["exp"] < now
    else:
        assert abs(after["exp"] - before["exp"]) <= 2 and after["exp"] > now
    if mutation == "wrong_audience":
        assert after["aud"] == after["azp"] != "proctor-tool"
    if mutation == "unknown_deployment":
        assert after[DEPLOYMENT_CLAIM] != "dep-1"
    if mutation == "wrong_version":
        assert after[VERSION_CLAIM] == "1.1"
    if mutation == "wrong_issuer":
        assert after["iss"] != platform.issuer


async def test_forge_launch_refuses_what_it_cannot_forge(platform: Platform) -> None:
    launch = {"context_id": COURSE, "link_id": "exam-1", "nonce": "n", "state": "s"}
    with pytest.raises(ValueError, match="unknown mutation"):
        forge_launch(platform, user_id="alice", **launch, mutation="wrong_colour")
    with pytest.raises(AuthRefused, match="not enrolled"):
        forge_launch(platform, user_id="mallory", **launch)


# ---- the token endpoint and NRPS --------------------------------------------------------------


def _assertion(platform: Platform, *, key: str = "tool", kid: str = TOOL_KID, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": platform.client_id,
        "sub": platform.client_id,
        "aud": platform.token_url,
        "iat": now,
        "exp": now + 300,
        "jti": secrets.token_urlsafe(12),
        **claims,
    }
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, _private_pem(key), algorithm="RS256", headers={"kid": kid})


def _token_form(assertion: str, **fields: str) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": assertion,
        "scope": NRPS_SCOPE,
    }
    form.update(fields)
    return form


async def _access_token(platform: Platform, session: aiohttp.ClientSession) -> str:
    async with session.post(platform.token_url, data=_token_form(_assertion(platform))) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    token: str = body["access_token"]
    return token


async def test_the_token_endpoint_accepts_the_tools_signed_assertion(
    platform: Platform, session: aiohttp.ClientSession
) -> None:
    assertion = _assertion(platform)
    async with session.post(platform.token_url, data=_token_form(assertion)) as resp:
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        body = await resp.json()
    assert body["token_type"] == "bearer" and body["scope"] == NRPS_SCOPE
    assert body["expires_in"] == 3600
    keys = await _platform_keys(session, platform)
    access = jwt.decode(body["access_token"], keys[platform.kid].key, algorithms=["RS256"])
    assert access["iss"] == platform.issuer and access["sub"] == "proctor-tool"
    [record] = platform.token_requests
    assert record["accepted"] and record["reason"] is None
    assert record["granted_scope"] == NRPS_SCOPE
    assert record["header"]["kid"] == TOOL_KID
    assert record["claims"] == _unverified(assertion)


@pytest.mark.parametrize(
    ("assertion", "fields", "status", "error", "reason"),
    [
        ({"key": "stranger"}, {}, 401, "invalid_client", "InvalidSignatureError"),
        ({"key": "stranger", "kid": "stranger-1"}, {}, 401, "invalid_client", "public key"),
        ({"sub": "another-tool"}, {}, 401, "invalid_client", "sub 'another-tool'"),
        ({"aud": "http://elsewhere.invalid/token"}, {}, 401, "invalid_client", "aud"),
        ({"exp": None}, {}, 401, "invalid_client", "exp missing"),
        ({"jti": None}, {}, 401, "invalid_client", "jti missing"),
        ({"exp": 1000}, {}, 401, "invalid_client", "ExpiredSignatureError"),
        ({}, {"grant_type": "password"}, 400, "unsupported_grant_type", "password"),
        ({}, {"client_assertion_type": "secret"}, 400, "invalid_request", "client_assertion_type"),
        ({}, {"scope": "https://example.invalid/scope"}, 400, "invalid_scope", "no supported"),
    ],
)
async def test_the_token_endpoint_refuses_a_bad_request(
    platform: Platform,
    session: aiohttp.ClientSession,
    assertion: dict[str, Any],
    fields: dict[str, str],
    status: int,
    error: str,
    reason: str,
) -> None:
    form = _token_form(_assertion(platform, **assertion), **fields)
    async with session.post(platform.token_url, data=form) as resp:
        assert resp.status == status
        body = await resp.json()
    assert body["error"] == error and reason in body["error_description"]
    [record] = platform.token_requests
    assert not record["accepted"] and reason in record["reason"]


async def test_the_token_endpoint_refuses_a_replayed_assertion_and_a_missing_one(
    platform: Platform, session: aiohttp.ClientSession
) -> None:
    form = _token_form(_assertion(platform))
    async with session.post(platform.token_url, data=form) as resp:
        assert resp.status == 200
    async with session.post(platform.token_url, data=form) as resp:
        assert resp.status == 401
        assert "already used" in (await resp.json())["error_description"]
    del form["client_assertion"]
    async with session.post(platform.token_url, data=form) as resp:
        assert resp.status == 400
        assert "client_assertion" in (await resp.json())["error_description"]
    assert [r["accepted"] for r in platform.token_requests] == [True, False, False]


async def test_nrps_serves_the_roster_to_a_bearer_of_an_access_token(
    platform: Platform, session: aiohttp.ClientSession
) -> None:
    url = platform.memberships_url(COURSE)
    token = await _access_token(platform, session)
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200
        assert resp.content_type == NRPS_MEDIA_TYPE
        assert "Link" not in resp.headers
        body = await resp.json(content_type=NRPS_MEDIA_TYPE)
    assert body["id"] == url
    assert body["context"] == {"id": COURSE, "label": "ALG1", "title": "Algebra I"}
    assert body["members"] == [
        {"user_id": m.user_id, "name": m.name, "roles": m.roles, "status": "Active"}
        for m in MEMBERS
    ]
    assert platform.nrps_requests == 1


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Basic abc", "Bearer not-a-jwt", "Bearer {tool_signed}"],
)
async def test_nrps_refuses_a_request_without_a_valid_access_token(
    platform: Platform, session: aiohttp.ClientSession, authorization: str | None
) -> None:
    headers = {}
    if authorization:
        headers["Authorization"] = authorization.format(tool_signed=_assertion(platform))
    async with session.get(platform.memberships_url(COURSE), headers=headers) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert platform.nrps_requests == 1


async def test_nrps_pages_and_filters_by_role(
    platform: Platform, session: aiohttp.ClientSession
) -> None:
    token = await _access_token(platform, session)
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{platform.memberships_url(COURSE)}?limit=2"
    async with session.get(url, headers=headers) as resp:
        first = await resp.json(content_type=NRPS_MEDIA_TYPE)
        next_url = str(resp.links["next"]["url"])
    async with session.get(next_url, headers=headers) as resp:
        second = await resp.json(content_type=NRPS_MEDIA_TYPE)
        assert "next" not in resp.links
    assert [m["user_id"] for m in first["members"]] == ["alice", "bob"]
    assert [m["user_id"] for m in second["members"]] == ["carol"]
    async with session.get(
        platform.memberships_url(COURSE), params={"role": INSTRUCTOR}, headers=headers
    ) as resp:
        instructors = await resp.json(content_type=NRPS_MEDIA_TYPE)
    assert [m["user_id"] for m in instructors["members"]] == ["carol"]
    assert platform.nrps_requests == 3


def test_a_launch_form_page_parses() -> None:
    page = '<form action="http://t/launch"><input name="id_token" value="a&amp;b"></form>'
    form = parse_launch_form(page)
    assert (form.action, form.fields) == ("http://t/launch", {"id_token": "a&b"})
