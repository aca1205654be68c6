"""The services' command line: it answers questions and exits instead of starting the service."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from aiohttp.test_utils import unused_port

from adapters.cli import plain_text, version
from adapters.settings_fields import MASK, display
from services.gateway.__main__ import main as gateway_main
from services.notifier.__main__ import main as notifier_main
from services.router.__main__ import main as router_main
from services.status.__main__ import main as status_main

SERVICES = ("gateway", "router", "status", "notifier")
BIN = Path(sys.executable).parent
SECRET = "do-not-print-this-token-secret-0123456789"
REDIS_PASSWORD = "do-not-print-this-redis-password"
DYNAMO_SECRET = "do-not-print-this-aws-secret"
Main = Callable[[Sequence[str] | None], None]
MAINS: dict[str, Main] = {
    "gateway": gateway_main,
    "router": router_main,
    "status": status_main,
    "notifier": notifier_main,
}


def _nothing_listens(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("service", SERVICES)
def test_help_prints_usage_and_exits_without_starting_the_service(service: str) -> None:
    port = unused_port()
    env = {
        f"PROCTOR_{service.upper()}__{'PORT' if service == 'gateway' else 'OPS_PORT'}": str(port),
        # Were it to start, it would find no Kafka here and hang or fail, not exit 0.
        "PROCTOR_KAFKA__BOOTSTRAP": f"127.0.0.1:{unused_port()}",
    }
    done = subprocess.run(
        [str(BIN / f"proctor-{service}"), "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: proctor-{service} [-h] [--version] [--print-settings]")
    assert f"PROCTOR_{service.upper()}__" in done.stdout
    assert "docs/settings.md" in done.stdout
    assert "``" not in done.stdout
    assert done.stderr == ""
    assert _nothing_listens(port)


def test_version_names_the_tool_and_the_package_version() -> None:
    done = subprocess.run(
        [str(BIN / "proctor-gateway"), "--version"], capture_output=True, text=True, timeout=30
    )

    assert done.returncode == 0
    assert done.stdout.startswith(f"proctor-gateway {version()} (Python ")
    assert version() != "unknown"


@pytest.mark.parametrize("service", SERVICES)
def test_print_settings_shows_the_environment_and_masks_every_secret(
    service: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROCTOR_GATEWAY__TOKEN_SECRET", SECRET)
    monkeypatch.setenv("PROCTOR_REDIS__URL", f"redis://:{REDIS_PASSWORD}@10.0.0.7:6379/2")
    monkeypatch.setenv("PROCTOR_DYNAMO__SECRET_ACCESS_KEY", DYNAMO_SECRET)
    monkeypatch.setenv("PROCTOR_KAFKA__BOOTSTRAP", "kafka-1:9092,kafka-2:9092")

    with pytest.raises(SystemExit) as exited:
        MAINS[service](["--print-settings"])

    out, err = capsys.readouterr()
    assert exited.value.code == 0
    lines = out.splitlines()
    assert "PROCTOR_KAFKA__BOOTSTRAP=kafka-1:9092,kafka-2:9092" in lines
    assert f"PROCTOR_REDIS__URL=redis://:{MASK}@10.0.0.7:6379/2" in lines
    assert f"PROCTOR_DYNAMO__SECRET_ACCESS_KEY={MASK}" in lines
    assert any(line.startswith(f"PROCTOR_{service.upper()}__") for line in lines)
    for secret in (SECRET, REDIS_PASSWORD, DYNAMO_SECRET):
        assert secret not in out + err
    if service == "gateway":
        assert f"PROCTOR_GATEWAY__TOKEN_SECRET={MASK}" in lines


def test_every_printed_line_is_a_variable_the_settings_read_back(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROCTOR_GATEWAY__PORT", "18123")
    with pytest.raises(SystemExit):
        gateway_main(["--print-settings"])
    printed = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())

    for name, value in printed.items():
        if value != MASK:
            monkeypatch.setenv(name, value)
    from services.gateway.settings import GatewaySettings

    again = GatewaySettings()
    assert again.gateway.port == 18123
    assert again.gateway.instance == printed["PROCTOR_GATEWAY__INSTANCE"]


def test_invalid_settings_exit_2_naming_the_variable_not_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROCTOR_GATEWAY__PORT", f"port-{SECRET}")

    with pytest.raises(SystemExit) as exited:
        gateway_main([])

    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert "PROCTOR_GATEWAY__PORT: Input should be a valid integer" in err
    assert SECRET not in err


def test_unknown_arguments_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        router_main(["--port", "9000"])

    assert exited.value.code == 2
    assert "unrecognized arguments: --port 9000" in capsys.readouterr().err


def test_url_credentials_are_masked_but_the_rest_of_the_address_kept() -> None:
    assert display("redis://user:pw@host:1/0") == f"redis://user:{MASK}@host:1/0"
    assert display("redis://host:1/0") == "redis://host:1/0"
    assert display("anything", secret=True) == MASK
    assert display(None) == "null"
    assert display(True) == "true"


def test_help_text_drops_rest_literals() -> None:
    assert plain_text("``proctor-x``: run it.\n\nMore.") == "proctor-x: run it."
