"""Redis AUTH and TLS settings, and the one helper every Redis client of the project comes from.

No server here: the secured Redis itself is exercised by tests/e2e/test_secured_stack.py.
"""

from __future__ import annotations

import ast
import io
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from redis.asyncio.connection import Connection, SSLConnection

from adapters.cli import print_settings
from adapters.redis_client import RedisSecurityError, redis_client, security_kwargs
from adapters.settings import CommonSettings, RedisSettings
from adapters.settings_fields import MASK

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "do-not-print-this-redis-password"


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "redis-password"
    path.write_text(PASSWORD + "\n")
    return path


def test_the_default_adds_nothing() -> None:
    assert security_kwargs(RedisSettings()) == {}


async def test_the_password_file_and_tls_files_reach_the_connections(password_file: Path) -> None:
    settings = RedisSettings(
        url="rediss://cache.internal:6380/2",
        password_file=str(password_file),
        ssl_ca_certs="/etc/ca.pem",
        ssl_certfile="/etc/client.pem",
        ssl_keyfile="/etc/client.key",
    )
    client = redis_client(settings, socket_timeout=1.5, socket_connect_timeout=2)
    try:
        pool = client.connection_pool
        assert pool.connection_class is SSLConnection
        assert pool.connection_kwargs["password"] == PASSWORD  # without the newline
        assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
        assert pool.connection_kwargs["ssl_certfile"] == "/etc/client.pem"
        assert pool.connection_kwargs["ssl_keyfile"] == "/etc/client.key"
        assert pool.connection_kwargs["socket_timeout"] == 1.5
        assert pool.connection_kwargs["socket_connect_timeout"] == 2
        assert pool.connection_kwargs["db"] == 2
        assert pool.connection_kwargs.get("ssl_cert_reqs", "required") == "required"
        assert PASSWORD not in repr(client) + repr(settings)
    finally:
        await client.aclose()


async def test_a_password_in_the_url_still_works_and_plain_urls_stay_plain() -> None:
    client = redis_client(RedisSettings(url="redis://:in-url@127.0.0.1:6379/0"))
    try:
        assert client.connection_pool.connection_class is Connection
        assert client.connection_pool.connection_kwargs["password"] == "in-url"
    finally:
        await client.aclose()


def test_the_callers_options_cannot_override_the_settings(password_file: Path) -> None:
    settings = RedisSettings(url="redis://127.0.0.1:6379/0", password_file=str(password_file))
    with pytest.raises(TypeError, match="password come from the settings"):
        redis_client(settings, password="other")


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_a_missing_or_empty_password_file_is_a_clear_error(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "redis-password"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RedisSecurityError, match="PROCTOR_REDIS__PASSWORD_FILE") as failed:
        redis_client(RedisSettings(password_file=str(path)))
    assert str(path) in str(failed.value)


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        (
            {"url": "redis://:pw@127.0.0.1:6379/0", "password_file": "/run/secrets/redis"},
            "set a password in PROCTOR_REDIS__URL or PROCTOR_REDIS__PASSWORD_FILE, not both",
        ),
        (
            {"url": "redis://127.0.0.1:6379/0", "ssl_ca_certs": "/ca.pem"},
            "PROCTOR_REDIS__SSL_CA_CERTS set but PROCTOR_REDIS__URL is not rediss:// (TLS)",
        ),
        (
            {"url": "rediss://127.0.0.1:6380/0", "ssl_keyfile": "/client.key"},
            "PROCTOR_REDIS__SSL_KEYFILE needs PROCTOR_REDIS__SSL_CERTFILE",
        ),
    ],
)
def test_inconsistent_combinations_are_refused(fields: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError) as refused:
        RedisSettings(**fields)
    # What --print-settings and the services report (adapters.cli.describe_errors).
    said = " ".join(e["msg"] for e in refused.value.errors(include_input=False))
    assert complaint in said
    assert "pw@" not in said


def test_the_environment_configures_it_and_print_settings_hides_the_password(
    monkeypatch: pytest.MonkeyPatch, password_file: Path
) -> None:
    monkeypatch.setenv("PROCTOR_REDIS__URL", "rediss://127.0.0.1:16380/0")
    monkeypatch.setenv("PROCTOR_REDIS__PASSWORD_FILE", str(password_file))
    monkeypatch.setenv("PROCTOR_REDIS__SSL_CA_CERTS", "/etc/ca.pem")
    settings = CommonSettings()
    assert security_kwargs(settings.redis)["password"] == PASSWORD
    out = io.StringIO()
    print_settings(settings, out)
    lines = out.getvalue().splitlines()
    assert f"PROCTOR_REDIS__PASSWORD_FILE={MASK}" in lines
    assert "PROCTOR_REDIS__SSL_CA_CERTS=/etc/ca.pem" in lines
    assert "PROCTOR_REDIS__URL=rediss://127.0.0.1:16380/0" in lines
    assert PASSWORD not in out.getvalue()


SOURCES = ("adapters", "services", "audit", "deploy", "simulator")
HELPER = ROOT / "adapters" / "redis_client.py"


def test_every_redis_client_of_the_project_comes_from_the_helper() -> None:
    made_elsewhere = []
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == HELPER:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                owner = func.value if isinstance(func, ast.Attribute) else None
                owner_name = getattr(owner, "attr", None) or getattr(owner, "id", None)
                if name in ("Redis", "StrictRedis") or (
                    name == "from_url" and owner_name in ("Redis", "aioredis", "redis")
                ):
                    made_elsewhere.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not made_elsewhere, f"Redis clients not from adapters.redis_client: {made_elsewhere}"
