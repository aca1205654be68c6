"""The PNG of a side-by-side result (``simulator.side_by_side``), built from ``simulator.plot``'s
pieces: the delivery latency CDF of both systems (every step), the p99 per second of send
time, CPU-seconds per 1,000 updates per server-side process, and peak RSS per process."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from simulator.plot import DPI, FIGSIZE_IN, _cdf, _empty, _histogram_counts, _log_value

SYSTEM_COLOURS = {"project": "tab:blue", "seed": "tab:orange"}
STEP_STYLES = ("-", "--", "-.", ":")


def _runs(result: Mapping[str, Any]) -> list[tuple[str, int, Mapping[str, Any]]]:
    systems = result.get("systems")
    if not isinstance(systems, Mapping) or not systems:
        raise ValueError("not a side-by-side result: it has no 'systems'")
    runs = []
    for name, steps in systems.items():
        if not isinstance(steps, Sequence):
            raise ValueError(f"system {name}: no steps")
        for n, step in enumerate(steps):
            if "delivery" not in step or "server" not in step:
                raise ValueError(f"system {name} step {n}: no delivery or server figures")
            runs.append((str(name), n, step))
    return runs


def _label(name: str, step: Mapping[str, Any], many: bool) -> str:
    return f"{name} {step.get('target_updates_per_s', 0):,.0f}/s" if many else name


def plot_side_by_side(result: Mapping[str, Any], path: Path) -> Path:
    runs = _runs(result)
    many = max(n for _, n, _ in runs) > 0
    figure = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    figure.suptitle(_title(result, runs))
    axes = figure.subplots(2, 2)
    _cdfs(axes[0, 0], runs, many)
    _p99_over_time(axes[0, 1], runs, many)
    _stacked(axes[1, 0], runs, many, "cpu")
    _stacked(axes[1, 1], runs, many, "rss")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path


def _title(result: Mapping[str, Any], runs: Sequence[tuple[str, int, Mapping[str, Any]]]) -> str:
    workload = result.get("workload") or {}
    config = runs[0][2].get("config") or {}
    return (
        f"{result.get('scenario')}: {config.get('students', '?'):,} students, "
        f"{config.get('proctors', '?')} proctors, {workload.get('students_per_exam', 50)} per "
        f"exam, {runs[0][2].get('crossing_share', '?')} of deliveries crossing nodes, "
        f"{config.get('duration_s', '?')} s per step; this project vs the seed design"
    )


def _cdfs(ax: Axes, runs: Sequence[tuple[str, int, Mapping[str, Any]]], many: bool) -> None:
    ax.set_title("student -> proctor delivery latency (cumulative)")
    drawn = False
    for name, n, step in runs:
        delivery = step["delivery"]
        counts = _histogram_counts(
            delivery.get("latency_histogram_fine") or delivery.get("latency_histogram")
        )
        if counts is None:
            continue
        edges, shares, total = counts
        xs, ys = _cdf(edges, shares)
        lat = delivery["latency_ms"]
        ax.plot(
            xs,
            ys,
            color=SYSTEM_COLOURS.get(name),
            linestyle=STEP_STYLES[n % len(STEP_STYLES)],
            label=f"{_label(name, step, many)}: p50 {_v(lat.get('p50'))}, p99 "
            f"{_v(lat.get('p99'))}, p99.9 {_v(lat.get('p99.9'))} ms ({total:,})",
        )
        drawn = True
    if not drawn:
        _empty(ax, "no deliveries")
        return
    for q in (0.5, 0.99):
        ax.axhline(q, color="grey", linewidth=0.5)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("ms (log scale)")
    ax.set_ylabel("share of deliveries <= x")
    ax.legend(fontsize="x-small", loc="lower right")


def _p99_over_time(
    ax: Axes, runs: Sequence[tuple[str, int, Mapping[str, Any]]], many: bool
) -> None:
    ax.set_title("p99 delivery latency by second of send time")
    drawn = False
    for name, n, step in runs:
        per_second = step["delivery"].get("latency_per_second") or {}
        values = [_log_value(v) for v in per_second.get("p99") or ()]
        if not values:
            continue
        ax.plot(
            range(len(values)),
            values,
            color=SYSTEM_COLOURS.get(name),
            linestyle=STEP_STYLES[n % len(STEP_STYLES)],
            linewidth=1,
            label=_label(name, step, many),
        )
        drawn = True
    if not drawn:
        _empty(ax, "no deliveries")
        return
    ax.set_yscale("log")
    ax.set_xlabel("s since sending started (per step)")
    ax.set_ylabel("ms (log scale)")
    ax.legend(fontsize="x-small", loc="upper left", ncols=2)


def _stacked(
    ax: Axes, runs: Sequence[tuple[str, int, Mapping[str, Any]]], many: bool, what: str
) -> None:
    if what == "cpu":
        ax.set_title("server CPU-seconds per 1,000 updates, per process (sending window)")
    else:
        ax.set_title("server peak RSS per process, MiB")
    labels = [_label(name, step, many) for name, _, step in runs]
    values: list[dict[str, float]] = []
    for _, _, step in runs:
        server = step["server"]
        if what == "cpu":
            values.append(
                {k: float(v) / 1000 for k, v in (server.get("cpu_us_per_update") or {}).items()}
            )
        else:
            processes = (step.get("resources") or {}).get("processes") or {}
            values.append(
                {
                    k: float((processes.get(k) or {}).get("rss_mib_peak") or 0)
                    for k in server.get("processes") or ()
                }
            )
    names = sorted(
        {k for v in values for k in v}, key=lambda k: -sum(v.get(k, 0.0) for v in values)
    )
    if not names:
        _empty(ax, "no samples")
        return
    bottom = [0.0] * len(runs)
    palette = colormaps["tab20"]
    for n, name in enumerate(names):
        heights = [v.get(name, 0.0) for v in values]
        ax.bar(labels, heights, bottom=bottom, label=name, color=palette(n % 20))
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    for x, total in enumerate(bottom):
        ax.annotate(
            f"{total:.2f}" if what == "cpu" else f"{total:,.0f}",
            (x, total),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylabel("CPU-s / 1,000 updates" if what == "cpu" else "MiB")
    ax.tick_params(axis="x", labelrotation=30 if many else 0, labelsize=8)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.35)
    ax.legend(fontsize="x-small", loc="upper left", ncols=3)


def _v(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "n/a"
    return f"{value:,.0f}" if value >= 10 else f"{value:.2f}"
