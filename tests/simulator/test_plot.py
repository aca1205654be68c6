"""One PNG per benchmark result: every kind of result draws, missing data is named."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest

from simulator import bench
from simulator.accounting import ConnectResult, Receipt, account, connect_summary, json_safe
from simulator.plot import DPI, figure_size_in, main, plot_result, result_kind

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
START_MS = 1_800_000_000_000


def load_result(scenario: str = "paper-stress") -> dict[str, Any]:
    """A small run in the shape ``simulator.bench`` writes, built with the real accounting."""
    sent: dict[str, dict[int, int]] = {}
    receipts: list[Receipt] = []
    for n in range(20):
        attempt = f"a{n}"
        sent[attempt] = {}
        for seq in range(1, 11):
            at = START_MS + seq * 1000 + n * 37
            sent[attempt][seq] = at
            latency = 0 if seq == 1 else 2 + (n * seq * 13) % 400  # 0 ms: the log-axis floor
            receipts.append(Receipt(attempt, seq, seq, at + latency, at + latency // 4))
    receipts.sort(key=lambda r: r.at_ms)
    delivery = account(sent, {"p": receipts}, {"p": list(sent)}, start_ms=START_MS).to_json()
    connects = [ConnectResult(True, 3.0 + n * 11.5) for n in range(20)]
    processes = ("gateway-0", "router", "kafka", "simulator-parent", "simulator-worker-0")
    timeline = [
        {
            "t": float(t),
            "wall": START_MS / 1000 - 5 + t,
            **{f"{name}.cores": 0.1 * (i + 1) for i, name in enumerate(processes)},
        }
        for t in range(1, 20)
    ]
    result: dict[str, Any] = json_safe(
        {
            "scenario": scenario,
            "config": {"students": 20, "proctors": 1, "duration_s": 10.0, "join_window_s": 2.0},
            "updates_sent": 200,
            "updates_per_s": 20.0,
            "connect": connect_summary(connects),
            "delivery": delivery,
            "throughput": {"sent_per_s": [0] + [20] * 10, "received_rows_per_s": [0] + [20] * 10},
            "resources": {
                "machine_cores": 2,
                "processes": {name: {"cpu_cores_mean": 0.1} for name in processes},
                "load_phase_cores": {name: 0.1 * (i + 1) for i, name in enumerate(processes)},
            },
            "resources_timeline": timeline,
        }
    )
    return result


def join_storm_result() -> dict[str, Any]:
    result = load_result("join-storm")
    result["delivery"] = account({}, {}, {"p": []}).to_json()
    result["throughput"] = {"sent_per_s": [], "received_rows_per_s": []}
    result["connect"] = connect_summary(
        [ConnectResult(True, 2.0 + n * 3.7) for n in range(300)]
        + [ConnectResult(False, 30_000.0, "TimeoutError")]
    )
    safe: dict[str, Any] = json_safe(result)
    return safe


def saturation_result() -> dict[str, Any]:
    steps = []
    for n, rate in enumerate((100, 200, 400)):
        step = load_result()
        step.pop("scenario")
        step["updates_per_s"] = rate * 0.98
        step["target_updates_per_s"] = rate
        step["ok"] = n == 0
        steps.append(step)
    steps[2]["delivery"]["lost"] = 7
    return {
        "scenario": "saturation",
        "p99_budget_ms": 100.0,
        "highest_sustainable_updates_per_s": 98.0,
        "steps": steps,
    }


def router_result() -> dict[str, Any]:
    return {
        "scenario": "router",
        "mode": "backlog",
        "events": 100_000,
        "log_partitions": 12,
        "events_per_s": 14780,
        "items_per_s": 30389,
        "window_s": 6.8,
        "router_cpu_util": 0.99,
        "router_cpu_per_event_us": 67.0,
    }


def assert_png_of_its_figure_size(path: Path, kind: str) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    width_in, height_in = figure_size_in(kind)
    height_px, width_px = matplotlib.image.imread(path).shape[:2]
    assert (width_px, height_px) == (round(width_in * DPI), round(height_in * DPI))


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (load_result, "load"),
        (join_storm_result, "join-storm"),
        (saturation_result, "saturation"),
        (router_result, "router"),
    ],
)
def test_each_kind_of_result_draws_a_png_of_its_figure_size(
    make: Any, kind: str, tmp_path: Path
) -> None:
    result = make()
    assert result_kind(result) == kind
    written = plot_result(result, tmp_path / "run.png")
    assert written == tmp_path / "run.png"
    assert_png_of_its_figure_size(written, kind)


def test_a_result_from_before_the_histograms_still_draws(tmp_path: Path) -> None:
    result = load_result()
    for name in ("latency_histogram", "inbound_histogram", "latency_per_second"):
        del result["delivery"][name]
    del result["resources_timeline"]  # falls back to mean cores per process
    assert_png_of_its_figure_size(plot_result(result, tmp_path / "old.png"), "load")


def test_a_saturation_result_from_before_the_histograms_still_draws(tmp_path: Path) -> None:
    result = saturation_result()
    for step in result["steps"]:
        del step["delivery"]["latency_histogram"]
    assert_png_of_its_figure_size(plot_result(result, tmp_path / "old.png"), "saturation")


def test_a_run_where_nothing_arrived_draws_empty_panels(tmp_path: Path) -> None:
    result = load_result()
    result["delivery"] = json_safe(account({"a1": {1: START_MS}}, {}, {"p": ["a1"]}).to_json())
    assert_png_of_its_figure_size(plot_result(result, tmp_path / "lost.png"), "load")


def test_a_result_without_delivery_data_is_a_clear_value_error(tmp_path: Path) -> None:
    result = load_result()
    del result["delivery"]
    with pytest.raises(ValueError, match="paper-stress result has no 'delivery'"):
        plot_result(result, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_a_saturation_step_without_latencies_is_named(tmp_path: Path) -> None:
    result = saturation_result()
    del result["steps"][1]["delivery"]["latency_ms"]
    with pytest.raises(ValueError, match="saturation step 1 result has no 'delivery.latency_ms'"):
        plot_result(result, tmp_path / "x.png")


def test_something_that_is_not_a_bench_result_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no 'scenario'"):
        plot_result({"students": 3000, "runs": []}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="router result has no 'events_per_s'"):
        plot_result({"scenario": "router"}, tmp_path / "x.png")


def test_cli_replots_a_result_beside_it_and_reports_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "router-1.json"
    good.write_text(json.dumps(router_result()))
    bad = tmp_path / "audit.json"
    bad.write_text(json.dumps({"runs": []}))
    assert main([str(good), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "router-1.png")
    assert_png_of_its_figure_size(tmp_path / "router-1.png", "router")
    assert f"{bad}: not a simulator.bench result" in err
    assert main([str(good), "--out", str(tmp_path / "elsewhere.png")]) == 0
    assert (tmp_path / "elsewhere.png").read_bytes()[:8] == PNG_SIGNATURE


def test_bench_write_puts_the_plot_beside_the_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    result = copy.deepcopy(router_result())
    path = bench.write("router", result)
    assert json.loads(path.read_text())["events_per_s"] == 14780
    assert_png_of_its_figure_size(path.with_suffix(".png"), "router")
    assert f"plotted {path.with_suffix('.png')}" in capsys.readouterr().err
