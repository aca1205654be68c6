"""Side by side with the seed design: placement, schedule, units, costs, ratios, table, plot."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from simulator.accounting import Receipt, account, json_safe
from simulator.loadgen import LoadConfig
from simulator.plot_side import plot_side_by_side
from simulator.side_by_side import (
    SCENARIOS,
    TOTAL_QUESTIONS,
    StudentState,
    crosses,
    crossing_share,
    in_ms,
    markdown_table,
    next_action,
    per_process_table,
    proctor_node,
    ratios,
    server_cost,
    student_node,
    student_rng,
)


def test_seventy_percent_of_every_exam_sits_on_the_other_node_spread_evenly() -> None:
    assert sum(crosses(i, 70) for i in range(50)) == 35
    assert sum(crosses(i, 70) for i in range(10)) == 7
    assert [crosses(i, 50) for i in range(4)] == [False, True, False, True]
    assert not any(crosses(i, 0) for i in range(50))
    assert all(crosses(i, 100) for i in range(50))
    for exam in range(4):
        nodes = [student_node(exam * 50 + i, 50) for i in range(50)]
        home = proctor_node(exam)
        assert nodes.count(1 - home) == 35 and nodes.count(home) == 15
    # Proctors alternate, so each node holds half of everything.
    everyone = [student_node(n, 50) for n in range(1000)]
    assert everyone.count(0) == everyone.count(1) == 500


def test_crossing_share_of_the_scenarios() -> None:
    for scenario in SCENARIOS.values():
        config = LoadConfig(students=scenario.students, students_per_exam=50)
        assert crossing_share(config, 70) == 0.7
    assert crossing_share(LoadConfig(students=40, students_per_exam=20), 50) == 0.5


def test_one_frame_per_update_same_stream_for_both_systems() -> None:
    def frames(seed: int, n: int) -> list[tuple[str, dict[str, Any]]]:
        rng, state = student_rng(seed, n), StudentState()
        return [next_action(state, rng) for _ in range(200)]

    first = frames(1, 7)
    assert first == frames(1, 7)
    assert first != frames(1, 8) and first != frames(2, 7)
    kinds = [kind for kind, _ in first]
    assert set(kinds) == {"status", "answer", "progress"}
    # Every away is followed by the way back; answers stop when every question is answered.
    for kind, fields in zip(kinds, first, strict=True):
        if kind == "status":
            assert fields[1]["status"] in ("away", "active")
    statuses = [f["status"] for k, f in first if k == "status"]
    assert all(a != b for a, b in zip(statuses, statuses[1:], strict=False))
    assert kinds.count("answer") == TOTAL_QUESTIONS


def test_stationary_mix_of_updates() -> None:
    rng, state = random.Random(5), StudentState()
    kinds = [next_action(state, rng)[0] for _ in range(20_000)]
    # Once every question is answered, progress or status only.
    assert kinds.count("answer") == TOTAL_QUESTIONS
    assert 0.12 < kinds.count("status") / len(kinds) < 0.18


def test_accounting_in_microseconds_comes_back_in_milliseconds() -> None:
    start = 1_800_000_000_000_000
    sent = {"a": {1: start + 1_000, 2: start + 2_500_000}}
    receipts = {
        "p": [Receipt("a", 1, 1, start + 1_400, 0), Receipt("a", 2, 2, start + 2_512_000, 0)]
    }
    report = in_ms(account(sent, receipts, {"p": ["a"]}, start_ms=start))
    assert report.latencies_ms == [0.4, 12.0]
    assert report.sent_at_ms == [(start + 1_000) // 1000, (start + 2_500_000) // 1000]
    assert report.start_ms == start // 1000
    per_second = report.to_json()["latency_per_second"]
    assert per_second["count"] == [1, 0, 1]


def test_server_cost_counts_only_server_processes() -> None:
    cores = {"gateway-0": 0.2, "kafka": 0.1, "simulator-parent": 0.5}
    processes = {
        "gateway-0": {"rss_mib_peak": 100.0},
        "kafka": {"rss_mib_peak": 600.0},
        "simulator-parent": {"rss_mib_peak": 300.0},
    }
    cost = server_cost(cores, processes, ("gateway-0", "kafka", "gone"), 200.0)
    assert cost["processes"] == ["gateway-0", "kafka"]
    assert cost["cores"] == 0.3
    assert cost["cpu_s_per_1000_updates"] == 1.5  # 0.3 CPU-s per s / 200 updates per s
    assert cost["cpu_us_per_update"] == {"gateway-0": 1000.0, "kafka": 500.0}
    assert cost["rss_mib"] == 700.0
    assert server_cost(cores, processes, ("kafka",), 0.0)["cpu_s_per_1000_updates"] is None


def run(system: str, p50: float, cpu: float, rss: float, rate: float = 200.0) -> dict[str, Any]:
    """A step in the shape ``side_by_side.measured`` returns, with the real accounting."""
    start = 1_800_000_000_000_000
    sent = {f"a{n}": {s: start + s * 1_000_000 + n * 10_000 for s in range(1, 6)} for n in range(4)}
    receipts = {
        "0": [
            Receipt(a, s, s, at + int(p50 * 1000), 0)
            for a, seqs in sent.items()
            for s, at in seqs.items()
        ]
    }
    report = in_ms(account(sent, receipts, {"0": list(sent)}, start_ms=start))
    delivery = report.to_json()
    processes = {"x": {"rss_mib_peak": rss}}
    shaped: dict[str, Any] = json_safe(
        {
            "system": system,
            "target_updates_per_s": rate,
            "config": {"students": 4, "proctors": 1, "duration_s": 5.0},
            "crossing_share": 0.7,
            "updates_per_s": rate,
            "delivery": delivery,
            "resources": {"processes": processes, "load_phase_cores": {"x": cpu * rate / 1000}},
            "server": server_cost({"x": cpu * rate / 1000}, processes, ("x",), rate),
        }
    )
    return shaped


def test_ratios_table_and_plot(tmp_path: Path) -> None:
    project, seed = run("project", 10.0, 5.5, 1400.0), run("seed", 0.5, 0.5, 200.0)
    r = ratios(project, seed)
    assert r == {
        "p50": 20.0,
        "p99": 20.0,
        "p99.9": 20.0,
        "cpu_s_per_1000_updates": 11.0,
        "rss": 7.0,
    }
    result = {
        "scenario": "side-by-side-S1",
        "workload": {"students_per_exam": 50},
        "systems": {"project": [project], "seed": [seed]},
        "ratios": [{"target_updates_per_s": 200.0, "ratios_project_over_seed": r}],
    }
    table = markdown_table(result)
    assert "| 200/s | project | 200.0 | 0 | 10.0 | 10.0 | 10.0 |" in table
    assert "| 200/s | seed | 200.0 | 0 | 0.50 |" in table
    assert "| | **project / seed** | | | 20x | 20x | 20x | | 11x | 7x |" in table
    assert "| 200/s | seed | x | 0.1 | 500.0 | 200 |" in per_process_table(result)
    png = plot_side_by_side(result, tmp_path / "s1.png")
    assert png.read_bytes().startswith(b"\x89PNG")
    # Several steps per system (S3) draw too.
    steps = {"project": [project, run("project", 20.0, 3.0, 1400.0, 500.0)], "seed": [seed]}
    assert plot_side_by_side({**result, "systems": steps}, tmp_path / "s3.png").exists()


def test_ratio_of_a_missing_figure_is_none() -> None:
    project, seed = run("project", 10.0, 5.5, 1400.0), run("seed", 0.5, 0.5, 200.0)
    seed["delivery"]["latency_ms"]["p50"] = None
    seed["server"]["rss_mib"] = 0.0
    r = ratios(project, seed)
    assert r["p50"] is None and r["rss"] is None and r["p99"] == 20.0


def test_plot_refuses_what_is_not_a_side_by_side_result(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no 'systems'"):
        plot_side_by_side({"scenario": "paper-stress"}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no delivery"):
        plot_side_by_side({"systems": {"seed": [{}]}}, tmp_path / "x.png")
