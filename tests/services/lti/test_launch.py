"""LTI 1.3 launches through the tool, from a real platform (lti1p3platform) to the tokens the
gateways trust; every refusal with its code, its status and nothing written.

No browser here (tests/browser/test_lti_launch.py has one): the platform's own pages are
followed with a client that keeps the tool's login cookie the way a browser does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, parse_qsl, urlsplit

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestServer, unused_port

from adapters.tokens import ProctorIdentity, StudentIdentity
from domain import lti as rules
from services.lti.app import create_app
from tests.lti.platform import (
    AuthRequest,
    authorize,
    begin_login,
    forge_launch,
)
from tests.services.lti.conftest import CODEC, COURSE, DASHBOARD_LINK, EXAM_LINK, LEARNERS, LtiPair

pytestmark = pytest.mark.integration


@dataclass
class Answer:
    status: int
    location: str
    page: str

    @property
    def code(self) -> str:
        found = re.search(r"id=code>([a-z_]+)<", self.page)
        return found.group(1) if found else ""

    def fragment(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.location).fragment).items()}


def cookie_header(auth: AuthRequest) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in auth.cookies.items())}


async def post_launch(
    http: aiohttp.ClientSession, action: str, fields: dict[str, str], headers: dict[str, str]
) -> Answer:
    async with http.post(action, data=fields, headers=headers, allow_redirects=False) as resp:
        return Answer(resp.status, resp.headers.get("Location", ""), await resp.text())


async def launch(
    pair: LtiPair,
    http: aiohttp.ClientSession,
    user: str,
    link: str = EXAM_LINK,
    *,
    mutation: str | None = None,
) -> Answer:
    auth = await begin_login(pair.platform, http, user_id=user, context_id=COURSE, link_id=link)
    if mutation is None:
        form = await authorize(pair.platform, http, auth)
        action, fields = form.action, form.fields
    else:
        action = auth.redirect_uri
        fields = forge_launch(
            pair.platform,
            user_id=user,
            context_id=COURSE,
            link_id=link,
            nonce=auth.nonce,
            state=auth.state,
            mutation=mutation,
        )
    return await post_launch(http, action, fields, cookie_header(auth))


def exam_of(pair: LtiPair, link: str = EXAM_LINK) -> str:
    return rules.exam_id(pair.platform.issuer, pair.platform.deployment_id, COURSE, link)


async def test_a_learner_lands_on_the_exam_page_with_a_student_token(
    lti: LtiPair, http: aiohttp.ClientSession
) -> None:
    answer = await launch(lti, http, "alice")
    assert answer.status == 303
    assert answer.location.startswith("http://127.0.0.1:9/exam#token=")
    identity = CODEC.verify(answer.fragment()["token"])
    assert isinstance(identity, StudentIdentity)
    assert identity.exam == exam_of(lti)
    assert identity.sub == lti_person(lti, "alice")
    assert identity.attempt == rules.attempt_id(identity.exam, identity.sub)
    assert identity.name == "Alice Learner"
    assert identity.time_end is not None  # the link's exam_minutes=45
    # The token is only in the fragment: nothing a server or a log between sees.
    assert "token" not in urlsplit(answer.location).query


def lti_person(pair: LtiPair, user: str) -> str:
    return rules.person_id(pair.platform.issuer, user)


async def test_a_relaunch_resumes_the_same_attempt_and_deadline(
    lti: LtiPair, http: aiohttp.ClientSession
) -> None:
    first = CODEC.verify((await launch(lti, http, "bob")).fragment()["token"])
    again = CODEC.verify((await launch(lti, http, "bob")).fragment()["token"])
    other = CODEC.verify((await launch(lti, http, "alice")).fragment()["token"])
    assert isinstance(first, StudentIdentity) and isinstance(again, StudentIdentity)
    assert isinstance(other, StudentIdentity)
    assert (again.exam, again.attempt, again.time_end) == (
        first.exam,
        first.attempt,
        first.time_end,
    )
    assert again.jti != first.jti  # a new token, the same attempt
    assert other.attempt != first.attempt and other.exam == first.exam


async def test_staff_land_on_the_dashboard_for_the_course_exams(
    lti: LtiPair, http: aiohttp.ClientSession
) -> None:
    answer = await launch(lti, http, "carol")
    assert answer.status == 303
    target = urlsplit(answer.location)
    assert (target.path, parse_qs(target.query)["exam"]) == ("/", [exam_of(lti)])
    identity = CODEC.verify(answer.fragment()["token"])
    assert isinstance(identity, ProctorIdentity)
    assert identity.exams == (exam_of(lti),)
    assert answer.fragment()["roster"] == lti.tool_url
    # A teaching assistant on the course's dashboard link gets the same exams.
    dash = await launch(lti, http, "tim", DASHBOARD_LINK)
    ta = CODEC.verify(dash.fragment()["token"])
    assert isinstance(ta, ProctorIdentity) and ta.exams == (exam_of(lti),)


async def test_the_dashboard_link_before_any_exam_says_so(
    lti: LtiPair, http: aiohttp.ClientSession
) -> None:
    answer = await launch(lti, http, "carol", DASHBOARD_LINK)
    assert answer.status == 200
    assert "No exam of this course has been opened yet" in answer.page
    assert "token" not in answer.location


@pytest.mark.parametrize(
    ("mutation", "status", "code"),
    [
        ("bad_signature", 401, "launch_invalid"),
        ("unknown_kid", 401, "launch_invalid"),
        ("wrong_audience", 401, "launch_invalid"),
        ("expired", 401, "launch_expired"),
        ("unknown_deployment", 403, "unknown_deployment"),
        ("no_message_type", 400, "wrong_message"),
        ("wrong_version", 400, "wrong_message"),
        ("no_nonce", 401, "launch_invalid"),
        ("wrong_issuer", 401, "launch_invalid"),
    ],
)
async def test_a_forged_launch_is_refused_and_writes_nothing(
    lti: LtiPair, http: aiohttp.ClientSession, mutation: str, status: int, code: str
) -> None:
    answer = await launch(lti, http, "alice", mutation=mutation)
    assert (answer.status, answer.code) == (status, code), answer.page
    assert "token" not in answer.location
    # Nothing written: no exam remembered, no deadline, no login left to reuse.
    written = await lti.keys()
    assert not [k for k in written if ":lti:exam:" in k or ":lti:deadline:" in k], written
    assert not [k for k in written if ":lti:login:" in k], written


async def test_a_learner_on_the_dashboard_link_is_refused(
    lti: LtiPair, http: aiohttp.ClientSession
) -> None:
    answer = await launch(lti, http, "alice", DASHBOARD_LINK)
    assert (answer.status, answer.code) == (403, "role_not_allowed")
    assert "instructors and teaching assistants" in answer.page


async def test_a_replayed_launch_is_refused(lti: LtiPair, http: aiohttp.ClientSession) -> None:
    auth = await begin_login(
        lti.platform, http, user_id="dan", context_id=COURSE, link_id=EXAM_LINK
    )
    form = await authorize(lti.platform, http, auth)
    first = await post_launch(http, form.action, form.fields, cookie_header(auth))
    assert first.status == 303
    # The same form again: its state was spent.
    again = await post_launch(http, form.action, form.fields, cookie_header(auth))
    assert (again.status, again.code) == (400, "state_invalid")
    # The same id_token under a fresh login: its nonce was spent.
    fresh = await begin_login(
        lti.platform, http, user_id="dan", context_id=COURSE, link_id=EXAM_LINK
    )
    replay = {"id_token": form.fields["id_token"], "state": fresh.state}
    answer = await post_launch(http, form.action, replay, cookie_header(fresh))
    assert (answer.status, answer.code) == (401, "nonce_replayed")


async def test_a_launch_from_another_browser_is_refused(
    lti: LtiPair, http: aiohttp.ClientSession
) -> None:
    """Login CSRF: a launch posted by a browser that did not start the login."""
    auth = await begin_login(
        lti.platform, http, user_id="alice", context_id=COURSE, link_id=EXAM_LINK
    )
    form = await authorize(lti.platform, http, auth)
    answer = await post_launch(http, form.action, form.fields, {})
    assert (answer.status, answer.code) == (400, "state_invalid")
    assert "new window" in answer.page


async def test_a_login_from_an_unknown_platform_or_deployment_is_refused(
    lti: LtiPair, http: aiohttp.ClientSession
) -> None:
    base = {"login_hint": "alice", "target_link_uri": f"{lti.tool_url}/lti/exam"}
    cases = [
        ({"iss": "http://lms.invalid"}, 400, "unknown_platform"),
        ({"iss": lti.platform.issuer, "lti_deployment_id": "dep-9"}, 403, "unknown_deployment"),
        (
            {"iss": lti.platform.issuer, "target_link_uri": "http://evil.invalid/lti/exam"},
            400,
            "wrong_message",
        ),
        ({"iss": lti.platform.issuer, "login_hint": ""}, 401, "launch_invalid"),
    ]
    for params, status, code in cases:
        async with http.get(
            f"{lti.tool_url}/lti/login", params=base | params, allow_redirects=False
        ) as resp:
            page = await resp.text()
            assert resp.status == status, params
            assert f"id=code>{code}<" in page, params
    assert await lti.keys() == []


async def test_the_roster_lists_the_enrolled_learners_with_their_attempts(
    lti: LtiPair, http: aiohttp.ClientSession
) -> None:
    learner = CODEC.verify((await launch(lti, http, "alice")).fragment()["token"])
    staff = await launch(lti, http, "carol")
    token = staff.fragment()["token"]
    exam = exam_of(lti)
    async with http.get(
        f"{lti.tool_url}/lti/roster",
        params={"exam": exam},
        headers={"Authorization": f"Bearer {token}", "Origin": "http://127.0.0.1:9"},
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:9"
        roster = await resp.json()
    by_name = {s["name"]: s for s in roster["students"]}
    assert set(by_name) == set(LEARNERS.values())  # staff are not listed
    assert isinstance(learner, StudentIdentity)
    assert by_name["Alice Learner"]["attempt"] == learner.attempt
    assert roster["title"] == "Midterm"
    # The platform's token endpoint got an assertion signed with the tool's published key.
    accepted = [r for r in lti.platform.token_requests if r.get("accepted")]
    assert accepted, lti.platform.token_requests
    async with http.get(f"{lti.tool_url}/lti/jwks.json") as resp:
        tool_kids = {k["kid"] for k in (await resp.json())["keys"]}
    assert accepted[0]["header"]["kid"] in tool_kids
    # Dashboards ask every minute; the platform is asked once per roster_cache_s.
    asked = lti.platform.nrps_requests
    assert asked >= 1
    async with http.get(
        f"{lti.tool_url}/lti/roster",
        params={"exam": exam},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 200 and (await resp.json())["students"] == roster["students"]
    assert lti.platform.nrps_requests == asked


async def test_the_roster_is_for_that_exams_proctors_only(
    lti: LtiPair, http: aiohttp.ClientSession
) -> None:
    student = (await launch(lti, http, "alice")).fragment()["token"]
    exam = exam_of(lti)
    other = CODEC.issue(ProctorIdentity(role="proctor", sub="p", exams=("another-exam",)))
    for headers, status in [
        ({}, 401),
        ({"Authorization": "Bearer not-a-token"}, 401),
        ({"Authorization": f"Bearer {student}"}, 403),
        ({"Authorization": f"Bearer {other}"}, 403),
    ]:
        async with http.get(
            f"{lti.tool_url}/lti/roster", params={"exam": exam}, headers=headers
        ) as resp:
            assert resp.status == status, headers
    assert lti.platform.nrps_requests == 0


async def test_the_tool_publishes_its_keys_and_its_configuration(
    lti: LtiPair, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{lti.tool_url}/lti/jwks.json") as resp:
        keys = (await resp.json())["keys"]
    assert [k["alg"] for k in keys] == ["RS256"] and "d" not in keys[0]
    jwt.PyJWK(keys[0])  # a usable public key
    async with http.get(f"{lti.tool_url}/lti/config") as resp:
        page = await resp.text()
    for value in ("/lti/login", "/lti/launch", "/lti/jwks.json", lti.platform.issuer):
        assert value in page
    async with http.get(f"{lti.tool_url}/lti/canvas.json") as resp:
        canvas = await resp.json()
    assert canvas["oidc_initiation_url"] == f"{lti.tool_url}/lti/login"
    assert canvas["public_jwk_url"] == f"{lti.tool_url}/lti/jwks.json"


async def test_a_launch_while_the_platform_keys_are_unreachable_says_so(
    lti: LtiPair, http: aiohttp.ClientSession
) -> None:
    """A second tool whose registration names a key set URL nobody serves."""
    port = unused_port()
    tool_url = f"http://127.0.0.1:{port}"
    platform = lti.settings.lti.platforms[0].model_copy(
        update={"key_set_url": "http://127.0.0.1:9/jwks"}
    )
    options = lti.settings.lti.model_copy(update={"public_url": tool_url, "platforms": [platform]})
    server = TestServer(
        create_app(lti.settings.model_copy(update={"lti": options})), host="127.0.0.1", port=port
    )
    await server.start_server()
    try:
        params = {
            "iss": lti.platform.issuer,
            "login_hint": "alice",
            "target_link_uri": f"{tool_url}/lti/exam",
        }
        async with http.get(f"{tool_url}/lti/login", params=params, allow_redirects=False) as resp:
            assert resp.status == 302
            auth = dict(parse_qsl(urlsplit(resp.headers["Location"]).query))
            cookie = resp.headers["Set-Cookie"].split(";", 1)[0]
        fields = forge_launch(
            lti.platform,
            user_id="alice",
            context_id=COURSE,
            link_id=EXAM_LINK,
            nonce=auth["nonce"],
            state=auth["state"],
        )
        answer = await post_launch(http, f"{tool_url}/lti/launch", fields, {"Cookie": cookie})
        assert (answer.status, answer.code) == (503, "platform_unavailable")
        assert "Try again in a minute" in answer.page
    finally:
        await server.close()
