"""The demo's hand-over: whole links and tokens at any terminal width, ports that do not clash."""

from __future__ import annotations

import io
import socket
from contextlib import ExitStack
from pathlib import Path

import pytest
from rich.console import Console

from simulator import demo
from simulator.demo import Links, _free, gateway_ports, new_run_id, parse_args, print_links

TOKEN = "eyJhbGciOiJIUzI1NiJ9." + "x" * 300 + ".signature-part"


def _links() -> Links:
    return Links(
        run_id="demo-1",
        exam="demo-1",
        proctor_gateway="ws://127.0.0.1:8081/ws",
        http_ports=(8080, 8081),
        proctor_token=TOKEN + "P",
        student_token=TOKEN + "S",
        log_dir=Path("/tmp/logs"),
    )


def test_links_and_tokens_are_printed_whole_on_a_narrow_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, width=40, force_terminal=True, color_system=None)

    print_links(console, _links())

    lines = out.getvalue().splitlines()
    dashboard = f"http://127.0.0.1:8081/?token={TOKEN}P&exam=demo-1"
    exam_page = f"http://127.0.0.1:8080/exam?token={TOKEN}S"
    for whole in (dashboard, exam_page, TOKEN + "P", TOKEN + "S"):
        assert any(whole in line for line in lines), whole
    assert "dashboard: " + dashboard in lines
    assert "student token: " + TOKEN + "S" in lines


def test_ports_are_the_asked_ones_when_free_else_any_free_ones() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        first, second = gateway_ports(busy)
        assert busy not in (first, second) and first != second
        assert gateway_ports(busy - 1)[0] != busy - 1  # its second port is the busy one
    free = gateway_ports(0)
    assert free[0] != free[1]
    first = next(p for p in (gateway_ports(0)[0] for _ in range(50)) if _free(p) and _free(p + 1))
    assert gateway_ports(first) == (first, first + 1)


def test_a_demo_starting_alongside_does_not_take_the_ports_another_claimed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(demo, "CLAIMS", tmp_path)
    first = next(p for p in (gateway_ports(0)[0] for _ in range(50)) if _free(p) and _free(p + 1))
    with ExitStack() as one, ExitStack() as other:
        assert gateway_ports(first, one) == (first, first + 1)
        # Nothing listens yet, but the first demo holds the claim.
        assert first not in gateway_ports(first, other)
    with ExitStack() as later:
        assert gateway_ports(first, later) == (first, first + 1)


def test_each_run_gets_its_own_id_unless_named() -> None:
    assert new_run_id() != new_run_id()
    assert parse_args([]).run_id is None
    args = parse_args(["--run-id", "mine", "--port", "0", "--keep"])
    assert (args.run_id, args.port, args.keep) == ("mine", 0, True)
