"""A real LTI 1.3 platform for tests: an LMS stand-in on ``http://localhost:<port>``.

The protocol is not ours: it is lti1p3platform's (pinned in pyproject.toml). This module only
stores a course catalogue and wires the library's classes to aiohttp routes:

* ``Registration`` holds the client id, deployment id, the tool's login, launch and JWKS URLs,
  the platform's RSA key pair (its ``kid`` is the library's: the key's JWK thumbprint) and iss.
* ``LTI1P3PlatformConfAbstract`` (subclassed) serves ``/jwks`` and, with ``get_access_token``,
  the OAuth2 client-credentials endpoint ``/token``: the library fetches the tool's JWKS (with
  ``requests``, on every token request: each request gets a fresh registration, so nothing is
  cached) and verifies the tool's ``client_assertion`` against the key its ``kid`` names.
* ``OIDCLoginAbstract`` does the third-party initiated login: ``launch_url_for`` is a platform
  page that signs the user in (a ``lms_session`` cookie on localhost, SameSite=Lax) and
  redirects to the tool's login URL with iss, login_hint (the user id), target_link_uri (the
  link's target), lti_message_hint (the context and link, base64url JSON), client_id and
  lti_deployment_id.
* ``LTIAdvantageMessageLaunchAbstract`` answers the tool's authentication request at ``/auth``
  (GET or POST): the library checks nonce, state, redirect_uri and client_id, then this module
  checks what the library leaves out (redirect_uri is the registered launch URL; scope=openid,
  response_type=id_token, response_mode=form_post, prompt=none; the lti_message_hint names a
  link; login_hint is the signed-in user when the request carries a platform session, else an
  enrolled user) and sets the claims (``set_user_data``, ``set_resource_link_claim``,
  ``set_launch_context_claim``, ``set_custom_parameters_claim``, ``set_launch_presentation_claim``,
  ``set_nrps``). The library signs the id_token (RS256, 5 minutes) and ``render_launch_form``
  answers the auto-submitting form that POSTs id_token and state to the redirect_uri.
* ``NamesRoleProvisioningService`` (subclassed) serves ``/nrps/<context>/memberships``: the
  library validates the bearer access token (signature, issuer, expiry, the NRPS scope) and
  builds the membership container; paging (``limit``, ``page``) answers a
  ``Link: <...>; rel="next"`` header.

``/token`` is stricter than the library, which checks only the assertion's signature: it also
requires client_assertion_type ``urn:ietf:params:oauth:client-assertion-type:jwt-bearer``,
``sub`` = the client id, ``aud`` naming the token URL, ``exp`` and a ``jti`` not seen before,
and at least one LTI scope it knows (else ``invalid_scope``). Every request is recorded in
``Platform.token_requests`` (the assertion's header and claims, decoded without verification,
and whether it was accepted or the reason it was refused); ``Platform.auth_requests`` records
``/auth`` the same way and ``Platform.nrps_requests`` counts every NRPS request.

The app runs in its own thread with its own event loop (the library is synchronous and fetches
the tool's JWKS with ``requests``), so it never blocks the test's loop, and a tool served on the
test's loop can answer the platform while the test awaits the platform.

Helpers beside the platform, for tests that run without a browser or that need launches no
genuine platform sends:

* ``begin_login`` opens ``launch_url_for`` and then the tool's login URL with an aiohttp client
  (``allow_redirects=False``) and returns the tool's authentication request (``AuthRequest``:
  its state, nonce, redirect_uri... and the cookies the tool set, taken from the response's
  Set-Cookie since aiohttp's default cookie jar drops cookies of IP hosts such as 127.0.0.1).
* ``authorize`` sends that authentication request to ``/auth`` and returns the parsed launch
  form (``LaunchForm``: action and fields) the browser would auto-submit; ``AuthRefused``
  carries the status and reason when the platform refuses.
* ``forge_launch`` builds the form fields (``{"id_token", "state"}``) the platform would POST
  for a user, context, link, nonce and state: with ``mutation=None`` through the very code path
  of ``/auth`` (a genuine launch), otherwise with one thing wrong (``MUTATIONS``). The library
  signs only genuine messages with the platform's key, so a tool's refusals (bad signature,
  unknown kid, wrong audience, expiry, unknown deployment, missing message type, wrong version,
  missing nonce, wrong issuer) can only be tested with tokens forged here: the genuine claims,
  decoded, changed as named and signed again (with the platform's key and kid, except for the
  two signature mutations, which sign with another RSA key).

Standalone, for the browser demo::

    .venv/bin/python -m tests.lti.platform --tool-base http://127.0.0.1:8090 [--port 8091]

starts a platform whose demo course has two learners and an instructor and prints the platform's
URLs (to register it in the tool) and the course page of each user.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import concurrent.futures
import html
import json
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lti1p3platform.exceptions import (  # type: ignore[import-untyped]
    InvalidKeySetUrl,
    LtiException,
    MissingRequiredClaim,
    PreflightRequestValidationException,
    UnsupportedGrantType,
)
from lti1p3platform.ltiplatform import LTI1P3PlatformConfAbstract  # type: ignore[import-untyped]
from lti1p3platform.membership import Context  # type: ignore[import-untyped]
from lti1p3platform.message_launch import (  # type: ignore[import-untyped]
    LTIAdvantageMessageLaunchAbstract,
)
from lti1p3platform.oidc_login import OIDCLoginAbstract  # type: ignore[import-untyped]
from lti1p3platform.registration import Registration  # type: ignore[import-untyped]
from lti1p3platform.request import Request  # type: ignore[import-untyped]
from lti1p3platform.service_connector import (  # type: ignore[import-untyped]
    NamesRoleProvisioningService,
)

LTI_CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
MESSAGE_TYPE_CLAIM = LTI_CLAIM + "message_type"
VERSION_CLAIM = LTI_CLAIM + "version"
DEPLOYMENT_CLAIM = LTI_CLAIM + "deployment_id"
TARGET_LINK_URI_CLAIM = LTI_CLAIM + "target_link_uri"
RESOURCE_LINK_CLAIM = LTI_CLAIM + "resource_link"
CONTEXT_CLAIM = LTI_CLAIM + "context"
ROLES_CLAIM = LTI_CLAIM + "roles"
CUSTOM_CLAIM = LTI_CLAIM + "custom"
LAUNCH_PRESENTATION_CLAIM = LTI_CLAIM + "launch_presentation"
NRPS_CLAIM = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"
NRPS_SCOPE = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"
NRPS_MEDIA_TYPE = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

LEARNER = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
INSTRUCTOR = "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"
TEACHING_ASSISTANT = (
    "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"
)
COURSE_OFFERING = "http://purl.imsglobal.org/vocab/lis/v2/course#CourseOffering"

SESSION_COOKIE = "lms_session"

MUTATIONS = (
    "bad_signature",
    "unknown_kid",
    "wrong_audience",
    "expired",
    "unknown_deployment",
    "no_message_type",
    "wrong_version",
    "no_nonce",
    "wrong_issuer",
)
"""The ``forge_launch`` mutations (``None`` is the genuine launch)."""


@dataclass
class ToolEndpoints:
    """Where the tool lives, as registered in the platform."""

    login_url: str  # the tool's OIDC login initiation URL
    launch_url: str  # the tool's redirect_uri (the launch)
    jwks_url: str  # the tool's public JWKS
    exam_target: str  # target_link_uri of an exam resource link
    dashboard_target: str  # target_link_uri of the course's proctor-dashboard link


@dataclass
class Member:
    """An enrolment in a course; roles are full LIS role URIs (``LEARNER``, ``INSTRUCTOR``)."""

    user_id: str
    name: str
    roles: list[str]
    status: str = "Active"  # NRPS status: Active, Inactive or Deleted


@dataclass
class _Link:
    link_id: str
    title: str
    target: str
    custom: dict[str, str]


@dataclass
class _Course:
    context_id: str
    title: str
    label: str
    members: dict[str, Member] = field(default_factory=dict)
    links: dict[str, _Link] = field(default_factory=dict)


class _Refused(Exception):
    """A request the platform refuses: the HTTP status and the reason shown to the client."""

    def __init__(self, reason: str, status: int = 400, error: str = "invalid_request") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.error = error


def _rsa_pem_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def message_hint(context_id: str, link_id: str) -> str:
    """The lti_message_hint the platform sends for a link (base64url JSON, no padding)."""
    raw = json.dumps({"context_id": context_id, "link_id": link_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_message_hint(hint: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(hint + "=" * (-len(hint) % 4))
        decoded = json.loads(raw)
        return str(decoded["context_id"]), str(decoded["link_id"])
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise _Refused(f"lti_message_hint {hint!r} names no link of this platform") from exc


# ---- lti1p3platform wiring --------------------------------------------------------------------


class _LibRequest(Request):  # type: ignore[misc]
    """The library's request: built from a dict of what it reads (method, get_data, ...)."""

    def build_metadata(self, request: Any) -> Any:
        return request


def _lib_request(
    method: str,
    path: str,
    *,
    get_data: dict[str, Any] | None = None,
    form_data: dict[str, Any] | None = None,
    headers: Any = None,
) -> Any:
    return _LibRequest(
        {
            "method": method,
            "get_data": get_data or {},
            "form_data": form_data or {},
            "headers": headers if headers is not None else {},
            "content_type": None,
            "path": path,
            "json": None,
        }
    )


class _PlatformConf(LTI1P3PlatformConfAbstract):  # type: ignore[misc]
    def init_platform_config(self, **kwargs: Any) -> None:
        self._registration = kwargs["registration"]

    def get_registration_by_params(self, **kwargs: Any) -> Any:
        return self._registration


class _OIDCLogin(OIDCLoginAbstract):  # type: ignore[misc]
    def set_lti_message_hint(self, **kwargs: Any) -> None:
        self._lti_message_hint = message_hint(kwargs["context_id"], kwargs["link_id"])

    def get_redirect(self, url: str) -> web.Response:
        return web.Response(status=302, headers={"Location": url})


def _launch_form_page(action: str, fields: dict[str, str]) -> str:
    inputs = "\n".join(
        f'  <input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        for name, value in fields.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Launching…</title></head>
<body>
<form id="lti-launch" method="post" action="{html.escape(action)}">
{inputs}
  <noscript><button type="submit">Continue</button></noscript>
</form>
<script>document.getElementById("lti-launch").submit();</script>
</body>
</html>
"""


class _MessageLaunch(LTIAdvantageMessageLaunchAbstract):  # type: ignore[misc]
    def __init__(
        self,
        request: Any,
        platform_config: Any,
        *,
        platform: Platform,
        session_user: str | None,
    ) -> None:
        super().__init__(request, platform_config)
        self._platform = platform
        self._session_user = session_user

    def prepare_launch(self, preflight_response: dict[str, Any]) -> None:
        """What the library leaves out: the request's shape, the link, the user; then claims."""
        platform = self._platform
        redirect_uri = preflight_response.get("redirect_uri")
        if redirect_uri != platform.tool.launch_url:
            raise _Refused(
                f"redirect_uri {redirect_uri!r} is not the registered launch URL "
                f"{platform.tool.launch_url!r}"
            )
        scope = str(preflight_response.get("scope", ""))
        if "openid" not in scope.split():
            raise _Refused(f"scope {scope!r} does not include openid")
        for name, expected in (
            ("response_type", "id_token"),
            ("response_mode", "form_post"),
            ("prompt", "none"),
        ):
            if preflight_response.get(name) != expected:
                got = preflight_response.get(name)
                raise _Refused(f"{name} must be {expected!r}, got {got!r}")
        context_id, link_id = _decode_message_hint(
            str(preflight_response.get("lti_message_hint", ""))
        )
        course, link = platform._link(context_id, link_id)
        login_hint = preflight_response.get("login_hint")
        if not login_hint:
            raise _Refused("login_hint missing")
        if self._session_user is not None and login_hint != self._session_user:
            raise _Refused(
                f"login_hint {login_hint!r} is not the signed-in user {self._session_user!r}",
                status=403,
            )
        with platform._lock:
            member = course.members.get(login_hint)
        if member is None:
            raise _Refused(f"{login_hint!r} is not enrolled in {context_id!r}", status=403)

        self.set_user_data(member.user_id, list(member.roles), full_name=member.name)
        self.set_resource_link_claim(link.link_id, title=link.title)
        self.set_launch_context_claim(
            course.context_id,
            context_types=[COURSE_OFFERING],
            context_title=course.title,
            context_label=course.label,
        )
        if link.custom:
            self.set_custom_parameters_claim(dict(link.custom))
        self.set_launch_presentation_claim(
            document_target="window", return_url=platform.course_url(context_id)
        )
        self.set_nrps(platform.memberships_url(context_id))
        self.set_launch_url(link.target)  # the target_link_uri claim

    def render_launch_form(self, launch_data: dict[str, Any], **kwargs: Any) -> Any:
        fields = {"id_token": str(launch_data["id_token"]), "state": str(launch_data["state"])}
        if kwargs.get("fields_only"):
            return fields
        return _launch_form_page(str(launch_data["launch_url"]), fields)


class _Memberships(NamesRoleProvisioningService):  # type: ignore[misc]
    def __init__(self, request: Any, platform_config: Any, *, platform: Platform, course: _Course):
        super().__init__(request, platform_config, platform.memberships_url(course.context_id))
        self._platform = platform
        self._course = course

    def get_context_by_id(self) -> Any:
        return Context(
            id=self._course.context_id, label=self._course.label, title=self._course.title
        )

    def is_resource_link_valid(self, context_id: str, resource_link_id: str) -> bool:
        with self._platform._lock:
            return resource_link_id in self._course.links

    def get_member_data_page(
        self,
        page: int = 1,
        limit: int | None = None,
        role: str | None = None,
        since: str | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        with self._platform._lock:
            members = list(self._course.members.values())
        if role:
            members = [m for m in members if any(_role_matches(r, role) for r in m.roles)]
        start, end = 0, len(members)
        if limit is not None:
            start = (page - 1) * limit
            end = start + limit
        content = [
            {"user_id": m.user_id, "name": m.name, "roles": list(m.roles), "status": m.status}
            for m in members[start:end]
        ]
        return {"content": content, "has_next": end < len(members)}


def _role_matches(uri: str, role: str) -> bool:
    return uri == role or uri.rsplit("#", 1)[-1] == role or uri.rsplit("/", 1)[-1] == role


# ---- the platform -----------------------------------------------------------------------------


class Platform:
    """An LMS on http://localhost:<port> (hostname ``localhost``, so a tool on 127.0.0.1 is
    cross-site). The port is bound at construction (``issuer`` and the URLs are known at once);
    ``start`` serves it from a thread of its own and ``stop`` ends it (call it even if the
    platform never started: it closes the bound socket). Also an async context manager."""

    def __init__(
        self,
        tool: ToolEndpoints,
        *,
        client_id: str = "proctor-tool",
        deployment_id: str = "dep-1",
        port: int = 0,
    ) -> None:
        self.tool = tool
        self.client_id = client_id
        self.deployment_id = deployment_id
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind(("127.0.0.1", port))
        except OSError:
            self._sock.close()
            raise
        self.port: int = self._sock.getsockname()[1]
        self.issuer = f"http://localhost:{self.port}"
        self.auth_url = f"{self.issuer}/auth"
        self.token_url = f"{self.issuer}/token"
        self.jwks_url = f"{self.issuer}/jwks"
        self._private_key, self._public_key = _rsa_pem_pair()
        self.kid: str = self._registration().get_kid()
        self._forger_key: str | None = None
        self._lock = threading.Lock()
        self._courses: dict[str, _Course] = {}
        self._sessions: dict[str, str] = {}
        self._used_jtis: set[str] = set()
        self.token_requests: list[dict[str, Any]] = []
        self.auth_requests: list[dict[str, Any]] = []
        self.nrps_requests = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    # -- the catalogue

    def add_course(self, context_id: str, title: str, label: str | None = None) -> None:
        """Name a course (``enrol`` and ``add_link`` create it, titled by its id, if need be)."""
        with self._lock:
            course = self._courses.setdefault(context_id, _Course(context_id, title, title))
            course.title = title
            course.label = label or title

    def enrol(self, context_id: str, member: Member) -> None:
        """Enrol (or re-enrol) a member in a course: launches and NRPS take it from here."""
        with self._lock:
            self._course(context_id).members[member.user_id] = member

    def add_link(
        self,
        context_id: str,
        link_id: str,
        title: str,
        target: str,
        custom: dict[str, str] | None = None,
    ) -> None:
        """A resource link to the tool in a course; ``target`` is its target_link_uri."""
        with self._lock:
            self._course(context_id).links[link_id] = _Link(
                link_id, title, target, dict(custom or {})
            )

    def _course(self, context_id: str) -> _Course:
        return self._courses.setdefault(context_id, _Course(context_id, context_id, context_id))

    def _link(self, context_id: str, link_id: str) -> tuple[_Course, _Link]:
        with self._lock:
            course = self._courses.get(context_id)
            link = course.links.get(link_id) if course else None
        if course is None or link is None:
            raise _Refused(f"no link {link_id!r} in course {context_id!r}", status=404)
        return course, link

    # -- URLs

    def launch_url_for(self, user_id: str, context_id: str, link_id: str) -> str:
        """The platform page a browser opens to launch a link as a user: it signs the user in
        and redirects to the tool's login URL (the OIDC third-party initiated login)."""
        return (
            f"{self.issuer}/courses/{quote(context_id, safe='')}/links/{quote(link_id, safe='')}"
            f"/launch?{urlencode({'user': user_id})}"
        )

    def course_url(self, context_id: str, user_id: str | None = None) -> str:
        """The course page (its links, as ``user_id`` sees them)."""
        url = f"{self.issuer}/courses/{quote(context_id, safe='')}"
        return f"{url}?{urlencode({'user': user_id})}" if user_id else url

    def memberships_url(self, context_id: str) -> str:
        return f"{self.issuer}/nrps/{quote(context_id, safe='')}/memberships"

    # -- the library's objects

    def _registration(self) -> Any:
        return (
            Registration()
            .set_iss(self.issuer)
            .set_client_id(self.client_id)
            .set_deployment_id(self.deployment_id)
            .set_oidc_login_url(self.tool.login_url)
            .set_launch_url(self.tool.launch_url)
            .set_tool_key_set_url(self.tool.jwks_url)
            .set_platform_private_key(self._private_key)
            .set_platform_public_key(self._public_key)
        )

    def _forger_private_key(self) -> str:
        """Another RSA key (forge_launch's), made once."""
        if self._forger_key is None:
            self._forger_key = _rsa_pem_pair()[0]
        return self._forger_key

    def _conf(self) -> Any:
        return _PlatformConf(registration=self._registration())

    def jwks(self) -> dict[str, Any]:
        """The platform's public JWKS (what ``/jwks`` serves)."""
        return cast(dict[str, Any], self._conf().get_jwks())

    def _launch(
        self,
        method: str,
        params: dict[str, str],
        *,
        session_user: str | None,
        fields_only: bool,
    ) -> Any:
        request = _lib_request(
            method,
            "/auth",
            get_data=params if method == "GET" else None,
            form_data=params if method != "GET" else None,
        )
        launch = _MessageLaunch(request, self._conf(), platform=self, session_user=session_user)
        try:
            return launch.lti_launch(fields_only=fields_only)
        except PreflightRequestValidationException as exc:
            raise _Refused(self._preflight_problem(params)) from exc

    def _preflight_problem(self, params: dict[str, str]) -> str:
        for name in ("client_id", "redirect_uri", "nonce", "state"):
            if not params.get(name):
                return f"{name} missing"
        if params["client_id"] != self.client_id:
            return f"client_id {params['client_id']!r} is not registered"
        return "refused by the library's preflight validation"

    # -- serving

    async def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the platform is already started")
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._serve, args=(started,), name=f"lti-platform-{self.port}", daemon=True
        )
        self._thread.start()
        await asyncio.wrap_future(started)

    async def stop(self) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is not None and loop is not None and stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
            await asyncio.to_thread(thread.join)
        self._thread = None
        self._sock.close()

    async def __aenter__(self) -> Platform:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _serve(self, started: concurrent.futures.Future[None]) -> None:
        try:
            asyncio.run(self._main(started))
        except BaseException as exc:
            if started.done():
                raise
            started.set_exception(exc)

    async def _main(self, started: concurrent.futures.Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        runner = web.AppRunner(self._app(), access_log=None)
        await runner.setup()
        try:
            await web.SockSite(runner, self._sock).start()
            started.set_result(None)
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/courses/{context_id}", self._course_page)
        app.router.add_get("/courses/{context_id}/links/{link_id}/launch", self._initiate)
        app.router.add_route("GET", "/auth", self._auth)
        app.router.add_route("POST", "/auth", self._auth)
        app.router.add_post("/token", self._token)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/nrps/{context_id}/memberships", self._nrps)
        return app

    # -- handlers

    def _session_user(self, request: web.Request) -> str | None:
        sid = request.cookies.get(SESSION_COOKIE)
        with self._lock:
            return self._sessions.get(sid) if sid else None

    def _sign_in(self, response: web.StreamResponse, user_id: str) -> None:
        sid = secrets.token_urlsafe(16)
        with self._lock:
            self._sessions[sid] = user_id
        response.set_cookie(SESSION_COOKIE, sid, path="/", httponly=True, samesite="Lax")

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.jwks())

    async def _index(self, request: web.Request) -> web.Response:
        with self._lock:
            courses = list(self._courses.values())
        items = "\n".join(
            f'<li><a href="{html.escape(self.course_url(c.context_id))}">'
            f"{html.escape(c.title)}</a></li>"
            for c in courses
        )
        return _page("Courses", f"<h1>Courses</h1>\n<ul>\n{items}\n</ul>")

    async def _course_page(self, request: web.Request) -> web.Response:
        context_id = request.match_info["context_id"]
        user_id = request.query.get("user")
        with self._lock:
            course = self._courses.get(context_id)
            members = list(course.members.values()) if course else []
            links = list(course.links.values()) if course else []
        if course is None:
            return _page("Not found", f"<p>No course {html.escape(context_id)}.</p>", status=404)
        member = next((m for m in members if m.user_id == user_id), None)
        title = html.escape(course.title)
        if member is None:
            people = "\n".join(
                f'<li><a href="{html.escape(self.course_url(context_id, m.user_id))}">'
                f"{html.escape(m.name)}</a> ({html.escape(_role_names(m.roles))})</li>"
                for m in members
            )
            body = f"<h1>{title}</h1>\n<p>Sign in as:</p>\n<ul>\n{people}\n</ul>"
            return _page(course.title, body)
        anchors = "\n".join(
            f'<li><a class="lti-link" data-link-id="{html.escape(link.link_id)}" '
            f'href="{html.escape(self.launch_url_for(member.user_id, context_id, link.link_id))}">'
            f"{html.escape(link.title)}</a></li>"
            for link in links
        )
        body = (
            f"<h1>{title}</h1>\n"
            f'<p class="signed-in">Signed in as {html.escape(member.name)} '
            f"({html.escape(_role_names(member.roles))})</p>\n<ul>\n{anchors}\n</ul>"
        )
        response = _page(course.title, body)
        self._sign_in(response, member.user_id)
        return response

    async def _initiate(self, request: web.Request) -> web.Response:
        context_id = request.match_info["context_id"]
        link_id = request.match_info["link_id"]
        user_id = request.query.get("user", "")
        try:
            course, link = self._link(context_id, link_id)
        except _Refused as exc:
            return _page("Not found", f"<p>{html.escape(exc.reason)}</p>", status=exc.status)
        with self._lock:
            enrolled = user_id in course.members
        if not enrolled:
            reason = f"{user_id!r} is not enrolled in {context_id!r}"
            return _page("Forbidden", f"<p>{html.escape(reason)}</p>", status=403)
        login = _OIDCLogin(request, self._conf())
        login.set_lti_message_hint(context_id=context_id, link_id=link_id)
        login.set_launch_url(link.target)  # the target_link_uri parameter
        response = cast(web.Response, login.initiate_login(user_id))
        self._sign_in(response, user_id)
        return response

    async def _auth(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            params = dict(request.query)
        else:
            form = await request.post()
            params = {k: v for k, v in form.items() if isinstance(v, str)}
        session_user = self._session_user(request)
        record: dict[str, Any] = {
            "method": request.method,
            "params": params,
            "session_user": session_user,
            "accepted": False,
            "reason": None,
        }
        self.auth_requests.append(record)
        try:
            page = self._launch(
                request.method, params, session_user=session_user, fields_only=False
            )
        except _Refused as exc:
            record["reason"] = exc.reason
            return web.Response(
                status=exc.status, text=f"LTI authentication request refused: {exc.reason}\n"
            )
        record["accepted"] = True
        return web.Response(text=page, content_type="text/html")

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        assertion = form.get("client_assertion", "")
        record: dict[str, Any] = {
            "grant_type": form.get("grant_type"),
            "client_assertion_type": form.get("client_assertion_type"),
            "scope": form.get("scope"),
            "header": None,
            "claims": None,
            "accepted": False,
            "reason": None,
            "granted_scope": None,
        }
        try:
            record["header"] = jwt.get_unverified_header(assertion)
            record["claims"] = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            pass
        self.token_requests.append(record)
        try:
            token = await asyncio.to_thread(self._issue_token, form, record["claims"])
        except _Refused as exc:
            record["reason"] = exc.reason
            return web.json_response(
                {"error": exc.error, "error_description": exc.reason},
                status=exc.status,
                headers={"Cache-Control": "no-store"},
            )
        record["accepted"] = True
        record["granted_scope"] = token["scope"]
        return web.json_response(token, headers={"Cache-Control": "no-store"})

    def _issue_token(self, form: dict[str, str], claims: dict[str, Any] | None) -> dict[str, Any]:
        try:
            token = cast(dict[str, Any], self._conf().get_access_token(form))
        except MissingRequiredClaim as exc:
            raise _Refused(str(exc)) from exc
        except UnsupportedGrantType as exc:
            raise _Refused(
                f"grant_type {form.get('grant_type')!r} is not client_credentials",
                error="unsupported_grant_type",
            ) from exc
        except (LtiException, InvalidKeySetUrl, jwt.PyJWTError, ValueError, TypeError) as exc:
            reason = f"client_assertion refused: {type(exc).__name__}: {exc}"
            raise _Refused(reason, status=401, error="invalid_client") from exc
        # The library verified the signature; what it does not check:
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            raise _Refused(f"client_assertion_type must be {CLIENT_ASSERTION_TYPE!r}")
        assert claims is not None  # it verified, so it decoded
        problem = self._assertion_problem(claims)
        if problem:
            raise _Refused(
                f"client_assertion refused: {problem}", status=401, error="invalid_client"
            )
        if not token["scope"]:
            raise _Refused(f"no supported scope in {form.get('scope')!r}", error="invalid_scope")
        return token

    def _assertion_problem(self, claims: dict[str, Any]) -> str | None:
        if claims.get("sub") != self.client_id:
            return f"sub {claims.get('sub')!r} is not the client id {self.client_id!r}"
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self.token_url not in audiences:
            return f"aud {aud!r} does not name the token URL {self.token_url!r}"
        if "exp" not in claims:
            return "exp missing"
        jti = claims.get("jti")
        if not jti:
            return "jti missing"
        with self._lock:
            if jti in self._used_jtis:
                return f"jti {jti!r} already used"
            self._used_jtis.add(jti)
        return None

    async def _nrps(self, request: web.Request) -> web.Response:
        self.nrps_requests += 1
        context_id = request.match_info["context_id"]
        with self._lock:
            course = self._courses.get(context_id)
        if course is None:
            return web.json_response({"error": f"no course {context_id!r}"}, status=404)
        query: dict[str, Any] = dict(request.query)
        try:
            for name in ("limit", "page"):
                if name in query:
                    query[name] = int(query[name])
                    if query[name] < 1:
                        raise ValueError(name)
        except ValueError:
            return web.json_response({"error": "limit and page are positive integers"}, status=400)
        service = _Memberships(
            _lib_request(request.method, request.path, get_data=query, headers=request.headers),
            self._conf(),
            platform=self,
            course=course,
        )
        try:
            response = service.handle_resp(service.handle_get_members)
        except (LtiException, jwt.PyJWTError) as exc:
            reason = f"Invalid LTI 1.3 authentication token: {type(exc).__name__}: {exc}"
            return _unauthorized(reason)
        if response.code == 401:
            return _unauthorized(str(response.message))
        if response.code != 200:
            return web.json_response({"error": response.message}, status=response.code)
        body = dict(response.result)
        headers = {}
        next_url = body.pop("next", None)
        if next_url:
            headers["Link"] = f'<{next_url}>; rel="next"'
        return web.Response(
            body=json.dumps(body).encode(),
            headers=headers,
            content_type=str(response.media_type),
        )


def _unauthorized(reason: str) -> web.Response:
    return web.json_response(
        {"error": reason}, status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


def _role_names(roles: list[str]) -> str:
    return ", ".join(role.rsplit("#", 1)[-1] for role in roles)


def _page(title: str, body: str, *, status: int = 200) -> web.Response:
    text = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>{html.escape(title)} · Test LMS</title></head>\n<body>\n{body}\n</body>\n</html>\n"
    )
    return web.Response(text=text, content_type="text/html", status=status)


# ---- helpers for launches without a browser, and launches no platform sends -------------------


@dataclass
class AuthRequest:
    """The tool's OIDC authentication request (where its login redirected the user agent)."""

    url: str  # the whole Location the tool's login answered
    params: dict[str, str]  # its query parameters
    state: str
    nonce: str
    redirect_uri: str
    client_id: str
    login_hint: str
    lti_message_hint: str
    cookies: dict[str, str]  # what the tool's login set (its state cookie, say)


@dataclass
class LaunchForm:
    """The platform's auto-submitting launch form: where it posts, and what."""

    action: str
    fields: dict[str, str]


class AuthRefused(Exception):
    """The platform refused an authentication request."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


async def begin_login(
    platform: Platform,
    session: aiohttp.ClientSession,
    *,
    user_id: str,
    context_id: str,
    link_id: str,
) -> AuthRequest:
    """Open ``launch_url_for`` (the platform signs the user in and redirects to the tool's
    login), then the tool's login, without following redirects: the tool's answer is a
    redirect to the platform's ``/auth``, whose parameters are its authentication request."""
    async with session.get(
        platform.launch_url_for(user_id, context_id, link_id), allow_redirects=False
    ) as resp:
        if resp.status != 302:
            raise RuntimeError(f"the platform answered {resp.status}: {await resp.text()}")
        login_url = resp.headers["Location"]
    async with session.get(login_url, allow_redirects=False) as resp:
        if resp.status not in (301, 302, 303, 307):
            raise RuntimeError(
                f"the tool's login answered {resp.status}, not a redirect: {await resp.text()}"
            )
        location = resp.headers["Location"]
        cookies = {name: morsel.value for name, morsel in resp.cookies.items()}
    params = dict(parse_qsl(urlsplit(location).query, keep_blank_values=True))
    return AuthRequest(
        url=location,
        params=params,
        state=params.get("state", ""),
        nonce=params.get("nonce", ""),
        redirect_uri=params.get("redirect_uri", ""),
        client_id=params.get("client_id", ""),
        login_hint=params.get("login_hint", ""),
        lti_message_hint=params.get("lti_message_hint", ""),
        cookies=cookies,
    )


async def authorize(
    platform: Platform,
    session: aiohttp.ClientSession,
    auth: AuthRequest,
    *,
    method: str = "GET",
) -> LaunchForm:
    """Send the tool's authentication request to the platform's ``/auth`` (as a GET, the way a
    redirect brings it, or a form POST) and return the launch form it answers."""
    if method == "GET":
        request = session.get(platform.auth_url, params=auth.params, allow_redirects=False)
    else:
        request = session.post(platform.auth_url, data=auth.params, allow_redirects=False)
    async with request as resp:
        text = await resp.text()
        if resp.status != 200:
            raise AuthRefused(resp.status, text.strip())
    return parse_launch_form(text)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = values.get("action") or ""
        elif tag == "input" and values.get("name"):
            self.fields[values["name"] or ""] = values.get("value") or ""


def parse_launch_form(page: str) -> LaunchForm:
    """The action and fields of a launch form page (what ``/auth`` answers)."""
    parser = _FormParser()
    parser.feed(page)
    if parser.action is None:
        raise ValueError("no form in the page")
    return LaunchForm(parser.action, parser.fields)


def forge_launch(
    platform: Platform,
    *,
    user_id: str,
    context_id: str,
    link_id: str,
    nonce: str,
    state: str,
    mutation: str | None = None,
) -> dict[str, str]:
    """The form fields (id_token, state) the platform would POST to the tool's launch URL for
    this user and link, answering an auth request with this nonce and state; with
    ``mutation=None`` exactly what ``/auth`` builds (the same code), else with one defect:

    * ``bad_signature``: signed with another RSA key under the platform's published kid;
    * ``unknown_kid``: signed with another key, under a kid the platform's JWKS lacks;
    * ``wrong_audience``: aud and azp name another client;
    * ``expired``: exp 10 minutes ago, iat 15 minutes ago;
    * ``unknown_deployment``: a deployment_id the platform never registered;
    * ``no_message_type``: no message_type claim;
    * ``wrong_version``: version "1.1";
    * ``no_nonce``: no nonce claim;
    * ``wrong_issuer``: iss another platform's.

    Raises ValueError for another mutation, and the platform's refusal (as ``AuthRefused``) if
    it would not launch this at all (the user not enrolled, say).
    """
    if mutation is not None and mutation not in MUTATIONS:
        raise ValueError(f"unknown mutation {mutation!r}; known: {', '.join(MUTATIONS)}")
    params = {
        "scope": "openid",
        "response_type": "id_token",
        "response_mode": "form_post",
        "prompt": "none",
        "client_id": platform.client_id,
        "redirect_uri": platform.tool.launch_url,
        "login_hint": user_id,
        "lti_message_hint": message_hint(context_id, link_id),
        "state": state,
        "nonce": nonce,
    }
    try:
        genuine = cast(
            dict[str, str], platform._launch("GET", params, session_user=None, fields_only=True)
        )
    except _Refused as exc:
        raise AuthRefused(exc.status, exc.reason) from exc
    if mutation is None:
        return genuine
    claims: dict[str, Any] = jwt.decode(genuine["id_token"], options={"verify_signature": False})
    key, kid = platform._private_key, platform.kid
    if mutation == "bad_signature":
        key = platform._forger_private_key()
    elif mutation == "unknown_kid":
        key, kid = platform._forger_private_key(), f"unknown-{secrets.token_hex(8)}"
    elif mutation == "wrong_audience":
        claims["aud"] = claims["azp"] = f"not-{platform.client_id}"
    elif mutation == "expired":
        now = int(time.time())
        claims["iat"], claims["exp"] = now - 900, now - 600
    elif mutation == "unknown_deployment":
        claims[DEPLOYMENT_CLAIM] = f"not-{platform.deployment_id}"
    elif mutation == "no_message_type":
        del claims[MESSAGE_TYPE_CLAIM]
    elif mutation == "wrong_version":
        claims[VERSION_CLAIM] = "1.1"
    elif mutation == "no_nonce":
        del claims["nonce"]
    elif mutation == "wrong_issuer":
        claims["iss"] = "http://lms.invalid"
    id_token = Registration.encode_and_sign(claims, key, headers={"kid": kid})
    return {"id_token": cast(str, id_token), "state": genuine["state"]}


# ---- standalone demo --------------------------------------------------------------------------

DEMO_COURSE = "demo-101"


def demo_course(platform: Platform, context_id: str = DEMO_COURSE) -> str:
    """A course with two learners (alice, bob), an instructor (carol), an exam link (custom
    exam_id=midterm) and the proctor dashboard link; returns its context id."""
    tool = platform.tool
    platform.add_course(context_id, "Demo 101: Proctored Exams", "DEMO101")
    platform.enrol(context_id, Member("alice", "Alice Learner", [LEARNER]))
    platform.enrol(context_id, Member("bob", "Bob Learner", [LEARNER]))
    platform.enrol(context_id, Member("carol", "Carol Instructor", [INSTRUCTOR]))
    platform.add_link(
        context_id, "exam-1", "Midterm exam", tool.exam_target, {"exam_id": "midterm"}
    )
    platform.add_link(context_id, "proctoring", "Proctor dashboard", tool.dashboard_target)
    return context_id


def tool_endpoints(tool_base: str) -> ToolEndpoints:
    """The tool's endpoints under a base URL (/lti/login, /lti/launch, /lti/jwks.json, ...)."""
    base = tool_base.rstrip("/")
    return ToolEndpoints(
        login_url=f"{base}/lti/login",
        launch_url=f"{base}/lti/launch",
        jwks_url=f"{base}/lti/jwks.json",
        exam_target=f"{base}/lti/exam",
        dashboard_target=f"{base}/lti/dashboard",
    )


async def _demo(args: argparse.Namespace) -> None:
    platform = Platform(
        tool_endpoints(args.tool_base),
        client_id=args.client_id,
        deployment_id=args.deployment_id,
        port=args.port,
    )
    context_id = demo_course(platform)
    async with platform:
        print(f"LTI 1.3 platform   {platform.issuer}")
        print(f"  client_id        {platform.client_id}")
        print(f"  deployment_id    {platform.deployment_id}")
        print(f"  auth             {platform.auth_url}")
        print(f"  token            {platform.token_url}")
        print(f"  jwks             {platform.jwks_url}")
        print(f"course page        {platform.course_url(context_id)}")
        for user_id in ("alice", "bob", "carol"):
            print(f"  as {user_id:<14} {platform.course_url(context_id, user_id)}")
        print("Ctrl-C (or SIGTERM) stops it.", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.lti.platform",
        description="An LTI 1.3 platform (lti1p3platform) with a demo course, for the tool.",
    )
    parser.add_argument(
        "--tool-base", required=True, help="the tool's base URL, e.g. http://127.0.0.1:8090"
    )
    parser.add_argument("--port", type=int, default=0, help="the platform's port (0: any)")
    parser.add_argument("--client-id", default="proctor-tool")
    parser.add_argument("--deployment-id", default="dep-1")
    asyncio.run(_demo(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
