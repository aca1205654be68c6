"""The LTI 1.3 tool: an LMS launches students into their exam page and staff into the proctor
dashboard, with tokens the gateways already trust, and tells the dashboard who is enrolled.

Routes (all under ``/lti/``, so an ingress can send them here and the rest to the gateways):

- ``login`` (GET or POST): OIDC third-party login initiation from the platform; remembers a
  state and a nonce (Redis, single use) and a cookie binding them to this browser, then sends
  the browser to the platform's authentication endpoint.
- ``launch`` (POST, the redirect URI): the platform's ``id_token`` checked (signature under
  the platform's published ``kid``, ``iss``, ``aud``, ``exp``/``iat``, nonce once, state, the
  LTI claims), then a 303 to the exam page or the dashboard with the token in the URL
  fragment, which never reaches a server or a log. A refusal is an error page; nothing is
  written.
- ``jwks.json``: the tool's public keys; ``config`` and ``canvas.json``: what an LMS
  administrator registers; ``roster``: the course's learners for the dashboard (proctor token).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from adapters.jwks import ALGORITHMS, JwksKeys
from adapters.ops_http import add_ops_routes
from adapters.redis_client import redis_client
from adapters.tokens import ProctorIdentity, StudentIdentity, TokenCodec, TokenError
from domain.lti import (
    Launch,
    LaunchRefused,
    Registration,
    attempt_id,
    exam_minutes,
    person_id,
    principal_role,
    read_launch,
    view_of,
)
from services.lti import pages
from services.lti.errors import PlatformUnavailable
from services.lti.keys import ToolKeys
from services.lti.metrics import LtiMetrics
from services.lti.nrps import NrpsClient
from services.lti.settings import LtiSettings
from services.lti.store import LtiStore, PendingLogin

log = structlog.get_logger("lti")


@dataclass
class Platforms:
    """The registered platforms and, per key set URL, the keys published there (Canvas cloud
    registers every institution under one issuer: the client id tells them apart)."""

    registrations: list[Registration]
    keys: dict[str, JwksKeys]

    def find(self, issuer: str, client_id: str | None) -> Registration:
        matches = [
            r
            for r in self.registrations
            if r.issuer == issuer and (client_id is None or r.client_id == client_id)
        ]
        if len(matches) != 1:
            # Several registrations under one issuer need the client id to tell them apart.
            why = "is not registered" if not matches else "has several registrations: no client id"
            raise LaunchRefused("unknown_platform", f"the platform {issuer!r} {why}")
        return matches[0]


SETTINGS = web.AppKey("settings", LtiSettings)
METRICS = web.AppKey("metrics", LtiMetrics)
KEYS = web.AppKey("keys", ToolKeys)
CODEC = web.AppKey("codec", TokenCodec)
STORE = web.AppKey("store", LtiStore)
PLATFORMS = web.AppKey("platforms", Platforms)
NRPS = web.AppKey("nrps", NrpsClient)

_STATUS = {
    "state_invalid": 400,
    "unknown_platform": 400,
    "wrong_message": 400,
    "launch_invalid": 401,
    "launch_expired": 401,
    "nonce_replayed": 401,
    "unknown_deployment": 403,
    "role_not_allowed": 403,
    "platform_unavailable": 503,
}


def _cookie_name(state: str) -> str:
    # One cookie per login, so two tabs launching at once do not overwrite each other's.
    return "lti-login-" + hashlib.sha256(state.encode()).hexdigest()[:16]


def _secure_cookies(settings: LtiSettings) -> bool:
    explicit = settings.lti.secure_cookies
    if explicit is not None:
        return explicit
    url = settings.lti.public_url
    # Browsers accept Secure cookies from loopback over plain http (a potentially
    # trustworthy origin), which is what lets the cross-site launch run on a laptop.
    return url.startswith("https://") or url.startswith(("http://127.0.0.1", "http://localhost"))


def _login_cookie(name: str, value: str, max_age: int, settings: LtiSettings) -> str:
    """The Set-Cookie binding a login to this browser (http.cookies before Python 3.14 cannot
    write Partitioned, hence by hand; name and value are URL-safe tokens)."""
    attributes = [f"{name}={value}", f"Max-Age={max_age}", "Path=/lti/", "HttpOnly"]
    if _secure_cookies(settings):
        # SameSite=None: the launch is a cross-site POST from the LMS. Partitioned: inside an
        # LMS iframe the cookie lives in the LMS's partition, where the launch finds it again.
        attributes += ["Secure", "SameSite=None", "Partitioned"]
    else:
        attributes.append("SameSite=Lax")
    return "; ".join(attributes)


def _redirect(status: int, location: str) -> web.Response:
    return web.Response(status=status, headers={"Location": location, "Cache-Control": "no-store"})


def _refuse(request: web.Request, refusal: LaunchRefused) -> web.Response:
    request.app[METRICS].refusals.labels(refusal.code).inc()
    log.info("launch_refused", code=refusal.code, reason=refusal.message)
    return web.Response(
        text=pages.refusal_page(refusal),
        status=_STATUS.get(refusal.code, 400),
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


async def _params(request: web.Request) -> dict[str, str]:
    params = dict(request.query)
    if request.method == "POST":
        params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    return params


async def login(request: web.Request) -> web.Response:
    """OIDC login initiation (LTI 1.3 core 5.1.1 and OIDC third-party initiated login)."""
    settings = request.app[SETTINGS]
    params = await _params(request)
    issuer, hint = params.get("iss", ""), params.get("login_hint", "")
    try:
        if not issuer or not hint:
            raise LaunchRefused("launch_invalid", "the login lacks iss or login_hint")
        registration = request.app[PLATFORMS].find(issuer, params.get("client_id"))
        target = params.get("target_link_uri", "")
        view_of(target, settings.lti.public_url)  # refuse a link to elsewhere before the round trip
        deployment = params.get("lti_deployment_id")
        if deployment is not None and deployment not in registration.deployment_ids:
            raise LaunchRefused(
                "unknown_deployment", f"deployment {deployment!r} is not registered"
            )
    except LaunchRefused as refusal:
        return _refuse(request, refusal)
    state, nonce, browser = (secrets.token_urlsafe(32) for _ in range(3))
    pending = PendingLogin(
        issuer=registration.issuer, client_id=registration.client_id, nonce=nonce, browser=browser
    )
    await request.app[STORE].begin_login(state, pending, settings.lti.login_ttl_s)
    query = {
        "scope": "openid",
        "response_type": "id_token",
        "response_mode": "form_post",
        "prompt": "none",
        "client_id": registration.client_id,
        "redirect_uri": f"{settings.lti.public_url.rstrip('/')}/lti/launch",
        "login_hint": hint,
        "state": state,
        "nonce": nonce,
    }
    if "lti_message_hint" in params:
        query["lti_message_hint"] = params["lti_message_hint"]
    response = _redirect(302, f"{registration.auth_login_url}?{urlencode(query)}")
    response.headers.add(
        "Set-Cookie",
        _login_cookie(_cookie_name(state), browser, settings.lti.login_ttl_s, settings),
    )
    request.app[METRICS].logins.inc()
    return response


async def _verified_claims(
    request: web.Request, id_token: str, pending: PendingLogin
) -> tuple[dict[str, Any], Registration]:
    settings = request.app[SETTINGS]
    platforms = request.app[PLATFORMS]
    registration = platforms.find(pending.issuer, pending.client_id)
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError as exc:
        raise LaunchRefused("launch_invalid", "the id_token is not a JWT") from exc
    alg, kid = header.get("alg"), header.get("kid")
    # Asymmetric only (LTI Security Framework 5.1.2), so a platform's public key can never
    # be turned into an HMAC secret.
    if alg not in ALGORITHMS:
        raise LaunchRefused("launch_invalid", f"id_token algorithm {alg!r} is not accepted")
    keys = platforms.keys[registration.key_set_url]
    key = await keys.lookup(kid) if isinstance(kid, str) else None
    if key is None and not keys.has_keys:
        raise LaunchRefused("platform_unavailable", "the platform's keys could not be fetched")
    if key is None:
        raise LaunchRefused(
            "launch_invalid", "the launch is signed with a key the platform does not publish"
        )
    try:
        claims: dict[str, Any] = jwt.decode(
            id_token,
            key,
            algorithms=[key.algorithm_name],
            audience=registration.client_id,
            issuer=registration.issuer,
            leeway=settings.lti.clock_leeway_s,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "nonce"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise LaunchRefused("launch_expired", "the launch has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise LaunchRefused("launch_invalid", "the launch is addressed to another tool") from exc
    except jwt.InvalidSignatureError as exc:
        raise LaunchRefused("launch_invalid", "the launch's signature does not verify") from exc
    except jwt.PyJWTError as exc:
        raise LaunchRefused("launch_invalid", f"the launch is not valid: {exc}") from exc
    # A nonce is good once per issuer, however the request around it was dressed.
    lifetime = max(int(claims["exp"]) - int(time.time()), 0) + settings.lti.clock_leeway_s
    if not await request.app[STORE].use_nonce(registration.issuer, claims["nonce"], lifetime + 60):
        raise LaunchRefused("nonce_replayed", "this launch was already used")
    if not secrets.compare_digest(str(claims["nonce"]), pending.nonce):
        raise LaunchRefused("launch_invalid", "the launch does not answer this tool's login")
    return claims, registration


async def launch(request: web.Request) -> web.Response:
    """The redirect URI: the platform's form post with id_token and state."""
    settings = request.app[SETTINGS]
    form = await request.post()
    id_token, state = form.get("id_token"), form.get("state")
    try:
        if not isinstance(state, str) or not state:
            raise LaunchRefused("state_invalid", "the launch has no state")
        if not isinstance(id_token, str) or not id_token:
            raise LaunchRefused("launch_invalid", "the launch has no id_token")
        pending = await request.app[STORE].take_login(state)
        if pending is None:
            raise LaunchRefused(
                "state_invalid", "this launch is too old or was already used (unknown state)"
            )
        cookie = request.cookies.get(_cookie_name(state), "")
        if not secrets.compare_digest(cookie, pending.browser):
            raise LaunchRefused(
                "state_invalid",
                "this browser did not start the launch (its login cookie is missing); if the LMS"
                " shows the tool in a frame, open it in a new window",
            )
        claims, registration = await _verified_claims(request, id_token, pending)
        verified = read_launch(claims, registration, settings.lti.public_url)
    except LaunchRefused as refusal:
        return _refuse(request, refusal)
    try:
        return await _hand_over(request, verified)
    except web.HTTPException as handed_over:
        # Spent: the login cookie goes with the login.
        handed_over.headers.add("Set-Cookie", _login_cookie(_cookie_name(state), "", 0, settings))
        raise


async def _hand_over(request: web.Request, launch: Launch) -> web.Response:
    """Mint the gateways' token for this launch and send the browser to its page."""
    settings = request.app[SETTINGS]
    store = request.app[STORE]
    codec = request.app[CODEC]
    app_url = settings.lti.app_url.rstrip("/")
    ttl = settings.lti.token_ttl_s
    if launch.view == "exam":
        exams = await store.remember_exam(launch)
    else:
        exams = await store.course_exams(launch.course)
    request.app[METRICS].launches.labels(launch.view, launch.role).inc()
    log.info("launched", view=launch.view, role=launch.role, exam=exams[0] if exams else None)
    if launch.role == "learner":
        minutes = exam_minutes(launch.custom)
        time_end = None
        if minutes is not None:
            proposed = int(time.time() * 1000) + minutes * 60_000
            time_end = await store.deadline(launch.attempt, proposed, ttl_s=minutes * 60 + ttl)
        token = codec.issue(
            StudentIdentity(
                role="student",
                sub=launch.person,
                exam=launch.exam,
                attempt=launch.attempt,
                name=launch.name,
                time_end=time_end,
            ),
            ttl_s=ttl,
        )
        return _redirect(303, f"{app_url}/exam#{urlencode({'token': token})}")
    if not exams:
        return web.Response(
            text=pages.note_page(
                "No exam yet",
                "No exam of this course has been opened yet. Open an exam link of the course"
                " once; from then on the dashboard shows it.",
            ),
            content_type="text/html",
        )
    token = codec.issue(
        ProctorIdentity(role="proctor", sub=launch.person, exams=tuple(exams), name=launch.name),
        ttl_s=ttl,
    )
    fragment = urlencode({"token": token, "roster": settings.lti.public_url.rstrip("/")})
    return _redirect(303, f"{app_url}/?{urlencode({'exam': exams[0]})}#{fragment}")


async def jwks(request: web.Request) -> web.Response:
    return web.json_response(
        request.app[KEYS].jwks(), headers={"Cache-Control": "public, max-age=300"}
    )


async def config(request: web.Request) -> web.Response:
    return web.Response(text=pages.config_page(request.app[SETTINGS].lti), content_type="text/html")


async def canvas_json(request: web.Request) -> web.Response:
    return web.json_response(pages.canvas_config(request.app[SETTINGS].lti))


def _cors(request: web.Request) -> dict[str, str]:
    origin = request.app[SETTINGS].lti.app_url.rstrip("/")
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Headers": "Authorization",
        "Access-Control-Allow-Methods": "GET",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


async def roster_preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=_cors(request))


async def roster(request: web.Request) -> web.Response:
    """The exam's learners as the platform enrols them, with the attempt id each would have:
    the dashboard lists those it has not seen as not started."""
    headers = _cors(request)
    exam = request.query.get("exam", "")
    auth = request.headers.get("Authorization", "")
    try:
        identity = request.app[CODEC].verify(auth.removeprefix("Bearer ").strip() or None)
    except TokenError as exc:
        return web.json_response({"error": exc.code}, status=401, headers=headers)
    if not isinstance(identity, ProctorIdentity) or exam not in identity.exams:
        return web.json_response({"error": "not_your_exam"}, status=403, headers=headers)
    link = await request.app[STORE].exam_link(exam)
    if link is None or link.memberships_url is None:
        return web.json_response(
            {"error": "no_roster", "message": "the platform offers no roster for this exam"},
            status=404,
            headers=headers,
        )
    try:
        registration = request.app[PLATFORMS].find(link.issuer, link.client_id)
        members = await request.app[NRPS].members(registration, link.memberships_url)
    except (PlatformUnavailable, LaunchRefused) as exc:
        request.app[METRICS].roster_reads.labels("failed").inc()
        log.warning("roster_failed", exam=exam, error=str(exc))
        return web.json_response(
            {"error": "platform_unavailable", "message": str(exc)}, status=502, headers=headers
        )
    request.app[METRICS].roster_reads.labels("ok").inc()
    students = []
    for member in members:
        if not member.active or principal_role(list(member.roles)) != "learner":
            continue
        student = person_id(link.issuer, member.user_id)
        students.append(
            {"student": student, "attempt": attempt_id(exam, student), "name": member.name}
        )
    return web.json_response(
        {"exam": exam, "title": link.title, "course": link.course_title, "students": students},
        headers=headers | {"Cache-Control": "no-store"},
    )


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = redis_client(
        settings.redis, socket_timeout=settings.redis.timeout_s, socket_connect_timeout=2
    )
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=settings.lti.http_timeout_s),
        headers={"User-Agent": "proctor-lti"},
    )
    app[STORE] = LtiStore(
        client, prefix=settings.redis.key_prefix, timeout_s=settings.redis.timeout_s
    )
    app[NRPS] = NrpsClient(
        session,
        app[KEYS],
        timeout_s=settings.lti.http_timeout_s,
        cache_s=settings.lti.roster_cache_s,
    )
    registrations = [p.registration() for p in settings.lti.platforms]
    app[PLATFORMS] = Platforms(
        registrations,
        {
            r.key_set_url: JwksKeys(r.key_set_url, timeout_s=settings.lti.http_timeout_s)
            for r in registrations
        },
    )
    for keys in app[PLATFORMS].keys.values():
        await keys.start()
    yield
    for keys in app[PLATFORMS].keys.values():
        await keys.close()
    await session.close()
    await client.aclose()


def create_app(
    settings: LtiSettings, *, registry: CollectorRegistry | None = None
) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    registry = registry or CollectorRegistry()
    app[METRICS] = LtiMetrics(registry)
    app[KEYS] = ToolKeys.load(settings.lti.private_key_file, settings.lti.previous_public_key_files)
    app[CODEC] = TokenCodec(settings.lti.token_secret, issuer=settings.lti.token_issuer)
    app.cleanup_ctx.append(_resources)
    app.router.add_route("GET", "/lti/login", login)
    app.router.add_route("POST", "/lti/login", login)
    app.router.add_post("/lti/launch", launch)
    app.router.add_get("/lti/jwks.json", jwks)
    app.router.add_get("/lti/config", config)
    app.router.add_get("/lti/canvas.json", canvas_json)
    app.router.add_get("/lti/roster", roster)
    app.router.add_route("OPTIONS", "/lti/roster", roster_preflight)
    add_ops_routes(app, registry, lambda: True)
    return app
