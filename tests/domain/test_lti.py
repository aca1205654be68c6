"""The LTI launch rules without the network: which claims make a launch, who it makes the
launching user, and the ids derived from the platform's."""

from __future__ import annotations

from typing import Any

import pytest

from domain import lti
from domain.lti import LaunchRefused, Registration, read_launch

TOOL = "https://proctor.example.edu"
REG = Registration(
    issuer="https://lms.example.edu",
    client_id="tool-1",
    auth_login_url="https://lms.example.edu/auth",
    auth_token_url="https://lms.example.edu/token",
    key_set_url="https://lms.example.edu/jwks",
    deployment_ids=("dep-1",),
)


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": REG.issuer,
        "aud": REG.client_id,
        "sub": "user-7",
        "name": "Ada Lovelace",
        lti.MESSAGE_TYPE: "LtiResourceLinkRequest",
        lti.VERSION: "1.3.0",
        lti.DEPLOYMENT_ID: "dep-1",
        lti.TARGET_LINK_URI: f"{TOOL}/lti/exam",
        lti.RESOURCE_LINK: {"id": "link-1", "title": "Midterm"},
        lti.CONTEXT: {"id": "course-1", "title": "Physics 101"},
        lti.ROLES: [lti.LEARNER],
        lti.CUSTOM: {"exam_minutes": "90"},
        lti.NRPS: {"context_memberships_url": "https://lms.example.edu/nrps/1"},
    }
    for key, value in changes.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def refusal(**changes: Any) -> str:
    with pytest.raises(LaunchRefused) as caught:
        read_launch(claims(**changes), REG, TOOL)
    return caught.value.code


def test_a_learner_launch_names_the_exam_and_the_attempt() -> None:
    launch = read_launch(claims(), REG, TOOL)
    assert (launch.role, launch.view, launch.name) == ("learner", "exam", "Ada Lovelace")
    assert launch.exam == lti.exam_id(REG.issuer, "dep-1", "course-1", "link-1")
    assert launch.attempt == lti.attempt_id(launch.exam, lti.person_id(REG.issuer, "user-7"))
    assert launch.memberships_url == "https://lms.example.edu/nrps/1"
    assert lti.exam_minutes(launch.custom) == 90


def test_ids_are_stable_and_apart() -> None:
    again = read_launch(claims(), REG, TOOL)
    assert again.attempt == read_launch(claims(), REG, TOOL).attempt
    other_link = read_launch(claims(**{lti.RESOURCE_LINK: {"id": "link-2"}}), REG, TOOL)
    other_user = read_launch(claims(sub="user-8"), REG, TOOL)
    assert len({again.exam, other_link.exam}) == 2
    assert len({again.attempt, other_link.attempt, other_user.attempt}) == 3
    # Lengths go into the digest, so ids cannot collide by moving a separator.
    assert lti.exam_id("a", "b", "c", "d:e") != lti.exam_id("a", "b", "c:d", "e")
    from pydantic import TypeAdapter

    from schemas.events import Id  # the ids must fit the log's id rule

    for value in (again.exam, again.attempt, again.person, again.course):
        TypeAdapter(Id).validate_python(value)


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        ([lti.LEARNER], "learner"),
        (["Learner"], "learner"),
        ([lti.INSTRUCTOR], "staff"),
        ([lti.TEACHING_ASSISTANT], "staff"),
        ([lti.LEARNER, lti.TEACHING_ASSISTANT], "staff"),
        (["http://purl.imsglobal.org/vocab/lis/v2/institution/person#Administrator"], "staff"),
        (["http://purl.imsglobal.org/vocab/lis/v2/membership#Mentor"], None),
        (["http://purl.imsglobal.org/vocab/lis/v2/membership/Learner#NonCreditLearner"], "learner"),
        ([], None),
    ],
)
def test_principal_roles(roles: list[str], expected: str | None) -> None:
    assert lti.principal_role(roles) == expected


def test_staff_on_an_exam_link_or_the_dashboard_link() -> None:
    assert read_launch(claims(**{lti.ROLES: [lti.INSTRUCTOR]}), REG, TOOL).role == "staff"
    dash = claims(**{lti.ROLES: [lti.INSTRUCTOR], lti.TARGET_LINK_URI: f"{TOOL}/lti/dashboard"})
    assert read_launch(dash, REG, TOOL).view == "dashboard"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({lti.MESSAGE_TYPE: None}, "wrong_message"),
        ({lti.MESSAGE_TYPE: "LtiDeepLinkingRequest"}, "wrong_message"),
        ({lti.VERSION: "1.1"}, "wrong_message"),
        ({lti.DEPLOYMENT_ID: "dep-9"}, "unknown_deployment"),
        ({lti.DEPLOYMENT_ID: None}, "unknown_deployment"),
        ({"sub": None}, "launch_invalid"),
        ({"azp": "someone-else"}, "launch_invalid"),
        ({"aud": [REG.client_id, "other"]}, "launch_invalid"),
        ({lti.RESOURCE_LINK: None}, "wrong_message"),
        ({lti.ROLES: None}, "wrong_message"),
        ({lti.ROLES: [lti._MEMBERSHIP + "Mentor"]}, "role_not_allowed"),
        ({lti.TARGET_LINK_URI: f"{TOOL}/lti/dashboard"}, "role_not_allowed"),
        ({lti.TARGET_LINK_URI: "https://evil.example/lti/exam"}, "wrong_message"),
        ({lti.TARGET_LINK_URI: f"{TOOL}/admin"}, "wrong_message"),
        ({lti.CONTEXT: None}, "wrong_message"),
    ],
)
def test_each_broken_rule_has_its_code(changes: dict[str, Any], code: str) -> None:
    assert refusal(**changes) == code


def test_several_audiences_need_azp() -> None:
    launch = read_launch(claims(aud=[REG.client_id, "other"], azp=REG.client_id), REG, TOOL)
    assert launch.client_id == REG.client_id


@pytest.mark.parametrize(
    ("custom", "minutes"),
    [({"exam_minutes": "45"}, 45), ({"exam_minutes": "0"}, None), ({"exam_minutes": "x"}, None)],
)
def test_exam_minutes(custom: dict[str, str], minutes: int | None) -> None:
    assert lti.exam_minutes(custom) == minutes
