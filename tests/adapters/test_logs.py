"""Logging setup: the services' events and the libraries' records leave as one kind of line.

Each case runs in its own interpreter: the setup is process-wide (root handler, structlog,
the exception hook), as it is in a service."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

PROGRAM = """
import logging, warnings
import structlog
from adapters.logs import configure_logging

configure_logging("INFO", json={json}, service="router")
structlog.get_logger("services.router.service").info("routed", batch=3)
logging.getLogger("aiokafka.consumer").warning("Heartbeat failed for group %s", "router")
logging.getLogger("botocore.credentials").debug("below the level: not written")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("faust.agents").exception("agent crashed")
warnings.warn("old API", DeprecationWarning)
token_secret = "a-secret-in-a-local-variable"
raise RuntimeError("boom")
"""


def _run(*, json_lines: bool) -> subprocess.CompletedProcess[str]:
    program = textwrap.dedent(PROGRAM).format(json=json_lines)
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", program], capture_output=True, text=True, timeout=30
    )


def _lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert done.stdout == ""
    return [json.loads(line) for line in done.stderr.splitlines()]


def test_library_records_and_own_events_are_json_lines_with_the_service() -> None:
    done = _run(json_lines=True)
    lines = _lines(done)
    by_event = {line["event"]: line for line in lines}

    assert done.returncode == 1
    assert all(line["service"] == "router" and "timestamp" in line for line in lines)
    assert (
        by_event["routed"] | {"batch": 3, "logger": "services.router.service"}
        == (by_event["routed"])
    )
    heartbeat = by_event["Heartbeat failed for group router"]
    assert (heartbeat["logger"], heartbeat["level"]) == ("aiokafka.consumer", "warning")
    assert not any("below the level" in line["event"] for line in lines)
    crashed = by_event["agent crashed"]
    assert crashed["logger"] == "faust.agents" and "ZeroDivisionError" in crashed["exception"]
    assert any(line["logger"] == "py.warnings" and "old API" in line["event"] for line in lines)
    assert "a-secret-in-a-local-variable" not in done.stderr  # tracebacks without locals
    uncaught = by_event["uncaught_exception"]
    assert uncaught["level"] == "critical" and "RuntimeError: boom" in uncaught["exception"]


def test_console_lines_name_the_service_too() -> None:
    done = _run(json_lines=False)
    text = done.stderr

    assert "routed" in text and "Heartbeat failed for group router" in text
    assert "RuntimeError: boom" in text
    assert "a-secret-in-a-local-variable" not in text
    for line in text.splitlines():
        if "[info" in line or "[warning" in line or "[error" in line:
            assert "service=router" in line, line
