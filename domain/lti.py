"""LTI 1.3 launches, the rules without the network: what a verified ``id_token`` must say,
who the launching user is to the proctoring system, and the ids derived from the platform's.

The signature, ``iss``, ``aud``, ``exp`` and ``iat`` are PyJWT's checks (``services/lti``);
what is left here is what LTI 1.3 core adds on top of OpenID Connect (section 5.3: message
type, version, deployment, roles, resource link, ``azp``) and this tool's own mapping:

- a Learner on an exam link gets that link's exam and one attempt, the same on every relaunch;
- an Instructor, Teaching Assistant or Administrator gets the proctor dashboard of the course;
- nobody else gets anything (a Learner on the dashboard link included).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

LTI = "https://purl.imsglobal.org/spec/lti/claim/"
MESSAGE_TYPE = LTI + "message_type"
VERSION = LTI + "version"
DEPLOYMENT_ID = LTI + "deployment_id"
TARGET_LINK_URI = LTI + "target_link_uri"
RESOURCE_LINK = LTI + "resource_link"
CONTEXT = LTI + "context"
ROLES = LTI + "roles"
CUSTOM = LTI + "custom"
NRPS = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"
NRPS_SCOPE = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"

_MEMBERSHIP = "http://purl.imsglobal.org/vocab/lis/v2/membership#"
LEARNER = _MEMBERSHIP + "Learner"
INSTRUCTOR = _MEMBERSHIP + "Instructor"
TEACHING_ASSISTANT = (
    "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"
)
# Principal roles that proctor. A sub-role names its principal in the path
# (``membership/Instructor#TeachingAssistant``), so a TA is an Instructor here.
_STAFF = {"Instructor", "Administrator"}
_LEARNERS = {"Learner", "Student"}

RefusalCode = Literal[
    "launch_invalid",
    "launch_expired",
    "unknown_platform",
    "unknown_deployment",
    "wrong_message",
    "state_invalid",
    "nonce_replayed",
    "role_not_allowed",
    "platform_unavailable",
]


class LaunchRefused(Exception):
    """A launch this tool will not honour; ``code`` names why, ``message`` says it to a person."""

    def __init__(self, code: RefusalCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Registration:
    """One platform (an LMS installation) as its administrator registered this tool there."""

    issuer: str
    client_id: str
    auth_login_url: str
    auth_token_url: str
    key_set_url: str
    deployment_ids: tuple[str, ...]


View = Literal["exam", "dashboard"]


@dataclass(frozen=True)
class Launch:
    """A verified resource-link launch, reduced to what the tool acts on."""

    issuer: str
    client_id: str
    deployment_id: str
    user: str
    name: str
    role: Literal["learner", "staff"]
    context_id: str
    context_title: str
    link_id: str
    link_title: str
    view: View
    custom: Mapping[str, str]
    memberships_url: str | None

    @property
    def exam(self) -> str:
        return exam_id(self.issuer, self.deployment_id, self.context_id, self.link_id)

    @property
    def course(self) -> str:
        return course_id(self.issuer, self.deployment_id, self.context_id)

    @property
    def person(self) -> str:
        return person_id(self.issuer, self.user)

    @property
    def attempt(self) -> str:
        return attempt_id(self.exam, self.person)


def _digest(*parts: str) -> str:
    # Unambiguous joining (lengths first), then 120 bits: collisions are not a concern at any
    # number of exams, and the id stays short enough to read in a log line.
    joined = "\x1f".join(f"{len(p)}:{p}" for p in parts).encode()
    return base64.b32encode(hashlib.sha256(joined).digest()[:15]).decode().lower()


def course_id(issuer: str, deployment_id: str, context_id: str) -> str:
    return "c-" + _digest("course", issuer, deployment_id, context_id)


def exam_id(issuer: str, deployment_id: str, context_id: str, link_id: str) -> str:
    """Stable per resource link: a relaunch, any learner's, names the same exam."""
    return "x-" + _digest("exam", issuer, deployment_id, context_id, link_id)


def person_id(issuer: str, user: str) -> str:
    """A student's or proctor's id: the platform's ``sub`` is stable per issuer (OIDC core 2)."""
    return "u-" + _digest("user", issuer, user)


def attempt_id(exam: str, student: str) -> str:
    """One attempt per learner per exam link: a relaunch resumes it rather than starting over."""
    return "a-" + _digest("attempt", exam, student)


def _principal(role: str) -> str:
    base, hashed, fragment = role.partition("#")
    if not hashed:
        return role  # the short form LTI 1.3 still allows: "Instructor"
    if base.endswith(("/membership", "/person")):
        return fragment  # context, institution or system role: "...membership#Learner"
    return base.rsplit("/", 1)[-1]  # a sub-role: "...membership/Instructor#TeachingAssistant"


def principal_role(roles: list[str]) -> Literal["learner", "staff"] | None:
    """Staff wins over Learner: a TA also enrolled as a learner proctors rather than sits."""
    principals = {_principal(role) for role in roles}
    if principals & _STAFF:
        return "staff"
    if principals & _LEARNERS:
        return "learner"
    return None


def view_of(target_link_uri: str, tool_url: str) -> View:
    """Which page the link is for, from the signed ``target_link_uri`` (never the request's)."""
    target = urlsplit(target_link_uri)
    tool = urlsplit(tool_url)
    if (target.scheme, target.netloc) != (tool.scheme, tool.netloc):
        raise LaunchRefused("wrong_message", "the link points at another tool")
    path = target.path.rstrip("/")
    if path.endswith("/lti/dashboard"):
        return "dashboard"
    if path.endswith("/lti/exam") or path.endswith("/lti/launch"):
        return "exam"
    raise LaunchRefused("wrong_message", f"this tool has no page at {target.path!r}")


def _str(claims: Mapping[str, Any], key: str) -> str:
    value = claims.get(key)
    return value if isinstance(value, str) else ""


def read_launch(claims: Mapping[str, Any], registration: Registration, tool_url: str) -> Launch:
    """The LTI checks on claims whose signature, issuer, audience and times PyJWT verified.

    Raises ``LaunchRefused`` naming the first rule broken.
    """
    if claims.get(MESSAGE_TYPE) != "LtiResourceLinkRequest":
        raise LaunchRefused(
            "wrong_message",
            f"message type {claims.get(MESSAGE_TYPE)!r}: this tool takes resource link launches",
        )
    if claims.get(VERSION) != "1.3.0":
        raise LaunchRefused("wrong_message", f"LTI version {claims.get(VERSION)!r}, not 1.3.0")
    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != registration.client_id:
        # OIDC core 3.1.3.7: with several audiences, azp must name this client.
        raise LaunchRefused("launch_invalid", "azp does not name this tool")
    if "azp" in claims and claims["azp"] != registration.client_id:
        raise LaunchRefused("launch_invalid", "azp does not name this tool")
    deployment = _str(claims, DEPLOYMENT_ID)
    if deployment not in registration.deployment_ids:
        raise LaunchRefused(
            "unknown_deployment",
            f"deployment {deployment!r} is not registered for this platform",
        )
    user = _str(claims, "sub")
    if not user:
        raise LaunchRefused("launch_invalid", "anonymous launch: no sub")
    link = claims.get(RESOURCE_LINK)
    link_id = link.get("id") if isinstance(link, dict) else None
    if not isinstance(link_id, str) or not link_id:
        raise LaunchRefused("wrong_message", "no resource link id")
    roles = claims.get(ROLES)
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise LaunchRefused("wrong_message", "no roles claim")
    role = principal_role(roles)
    if role is None:
        raise LaunchRefused("role_not_allowed", "only learners and course staff can open this tool")
    view = view_of(_str(claims, TARGET_LINK_URI), tool_url)
    if view == "dashboard" and role != "staff":
        raise LaunchRefused(
            "role_not_allowed", "the proctor dashboard is for instructors and teaching assistants"
        )
    context = claims.get(CONTEXT)
    context = context if isinstance(context, dict) else {}
    context_id = context.get("id")
    if not isinstance(context_id, str) or not context_id:
        raise LaunchRefused("wrong_message", "no course (context) in the launch")
    custom = claims.get(CUSTOM)
    nrps = claims.get(NRPS)
    memberships = nrps.get("context_memberships_url") if isinstance(nrps, dict) else None
    name = _str(claims, "name") or " ".join(
        p for p in (_str(claims, "given_name"), _str(claims, "family_name")) if p
    )
    return Launch(
        issuer=_str(claims, "iss"),
        client_id=registration.client_id,
        deployment_id=deployment,
        user=user,
        name=name[:200],
        role=role,
        context_id=context_id,
        context_title=str(context.get("title") or context.get("label") or ""),
        link_id=link_id,
        link_title=str(link.get("title") or "") if isinstance(link, dict) else "",
        view=view,
        custom={str(k): str(v) for k, v in custom.items()} if isinstance(custom, dict) else {},
        memberships_url=memberships if isinstance(memberships, str) else None,
    )


def exam_minutes(custom: Mapping[str, str]) -> int | None:
    """The exam's length from the link's custom parameter ``exam_minutes``, if it has one."""
    raw = custom.get("exam_minutes", "").strip()
    if not raw.isdigit() or not 0 < int(raw) <= 7 * 24 * 60:
        return None
    return int(raw)
