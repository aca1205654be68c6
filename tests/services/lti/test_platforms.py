"""Which registration a login or launch belongs to: by issuer, and by client id when one
issuer hosts several (Canvas cloud registers every institution under one issuer)."""

from __future__ import annotations

import pytest

from domain.lti import LaunchRefused, Registration
from services.lti.app import Platforms


def registration(issuer: str, client_id: str) -> Registration:
    return Registration(
        issuer, client_id, f"{issuer}/auth", f"{issuer}/token", f"{issuer}/jwks", ("d",)
    )


PLATFORMS = Platforms(
    [
        registration("https://moodle.example.edu", "m-1"),
        registration("https://canvas.instructure.com", "10000000000001"),
        registration("https://canvas.instructure.com", "10000000000002"),
    ],
    {},
)


def test_one_registration_per_issuer_needs_no_client_id() -> None:
    assert PLATFORMS.find("https://moodle.example.edu", None).client_id == "m-1"
    assert PLATFORMS.find("https://moodle.example.edu", "m-1").client_id == "m-1"


def test_a_shared_issuer_is_told_apart_by_client_id() -> None:
    found = PLATFORMS.find("https://canvas.instructure.com", "10000000000002")
    assert found.client_id == "10000000000002"
    with pytest.raises(LaunchRefused) as caught:
        PLATFORMS.find("https://canvas.instructure.com", None)
    assert caught.value.code == "unknown_platform"
    assert "several registrations" in caught.value.message


@pytest.mark.parametrize(
    ("issuer", "client_id"),
    [("https://lms.invalid", None), ("https://moodle.example.edu", "m-2")],
)
def test_unknown_issuer_or_client_is_refused(issuer: str, client_id: str | None) -> None:
    with pytest.raises(LaunchRefused) as caught:
        PLATFORMS.find(issuer, client_id)
    assert caught.value.code == "unknown_platform"
