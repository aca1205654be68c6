"""One PNG per benchmark result; ``simulator.bench`` writes it beside the JSON.

    .venv/bin/python -m simulator.plot bench/results/exam-peak-20261122-125841.json [--out X.png]

- a load run (paper-stress, exam-peak, small): delivery latency distribution, throughput over
  time, latency by second of send time, CPU cores per process over time;
- join-storm: the connect-time distribution and the connect outcomes instead;
- saturation: latency percentiles against the measured rate of each step, busy cores per step
  and the latency distribution of every step;
- router: its throughput numbers.

Results written before the histograms and per-second latencies existed still plot: the
distribution is then a CDF drawn from the percentiles. A result without the data its figure
needs raises ``ValueError`` naming what is missing. Figures are built with ``Figure`` (Agg
canvas) rather than pyplot: no display, no global figure registry.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

DPI = 100
FIGSIZE_IN = (14.0, 10.0)
ROUTER_FIGSIZE_IN = (12.0, 5.0)
TARGETS_MS = (("p50", 10.0), ("p99", 50.0), ("p99.9", 150.0))  # the brief's delivery targets
MARKED = ("p50", "p99", "p99.9")
CDF_POINTS = (
    ("min", 0.0),
    ("p50", 0.5),
    ("p90", 0.9),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("max", 1.0),
)
COLOURS = {"p50": "tab:green", "p99": "tab:orange", "p99.9": "tab:red", "max": "tab:purple"}
FLOOR_MS = 0.5  # a log axis cannot show 0 ms: smaller values are drawn here


def result_kind(result: Mapping[str, Any]) -> str:
    """``load``, ``join-storm``, ``saturation`` or ``router``."""
    if not isinstance(result, Mapping) or "scenario" not in result:
        raise ValueError("not a simulator.bench result: it has no 'scenario' field")
    scenario = result["scenario"]
    if scenario == "router":
        return "router"
    if scenario == "saturation" or "steps" in result:
        return "saturation"
    config = result.get("config")
    if scenario == "join-storm" or (isinstance(config, Mapping) and config.get("join_only")):
        return "join-storm"
    return "load"


def figure_size_in(kind: str) -> tuple[float, float]:
    return ROUTER_FIGSIZE_IN if kind == "router" else FIGSIZE_IN


def plot_result(result: Mapping[str, Any], path: Path) -> Path:
    """Draw ``result`` (a ``simulator.bench`` JSON result) into the PNG ``path``."""
    kind = result_kind(result)
    figure = Figure(figsize=figure_size_in(kind), dpi=DPI, layout="constrained")
    draw = {
        "load": _load_run,
        "join-storm": _join_storm,
        "saturation": _saturation,
        "router": _router,
    }[kind]
    draw(figure, result)  # raises ValueError before anything is written
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path


# -- figures ----------------------------------------------------------------------------------


def _load_run(figure: Figure, result: Mapping[str, Any]) -> None:
    name = str(result["scenario"])
    delivery = _need(result, ("delivery",), name)
    latency = _need(result, ("delivery", "latency_ms"), name)
    throughput = _need(result, ("throughput",), name)
    per_second = delivery.get("latency_per_second")
    axes = figure.subplots(2, 2)
    figure.suptitle(_load_title(result))
    _distribution(
        axes[0, 0],
        latency,
        delivery.get("latency_histogram"),
        "student -> proctor delivery latency",
        targets=True,
    )
    _throughput(axes[0, 1], throughput)
    _latency_over_time(axes[1, 0], per_second)
    start_ms = per_second.get("start_ms") if isinstance(per_second, Mapping) else None
    _cores(axes[1, 1], result, start_ms, len(throughput.get("sent_per_s") or ()))


def _join_storm(figure: Figure, result: Mapping[str, Any]) -> None:
    name = str(result["scenario"])
    connect = _need(result, ("connect",), name)
    connect_ms = _need(result, ("connect", "connect_ms"), name)
    axes = figure.subplot_mosaic([["distribution", "outcome"], ["cores", "cores"]])
    config = result.get("config") or {}
    figure.suptitle(
        f"{name}: {_n(connect.get('attempted'))} students joining within "
        f"{_n(config.get('join_window_s'))} s; connected {_n(connect.get('succeeded'))}, "
        f"failed {_n(connect.get('failed'))}\nconnect ms: "
        + "  ".join(f"{q} {_ms(connect_ms.get(q))}" for q in (*MARKED, "max"))
    )
    _distribution(
        axes["distribution"],
        connect_ms,
        connect.get("connect_histogram"),
        "connect time (open to joined)",
        targets=False,
    )
    _connect_outcomes(axes["outcome"], connect)
    _cores(axes["cores"], result, None, 0)


def _saturation(figure: Figure, result: Mapping[str, Any]) -> None:
    steps = _need(result, ("steps",), "saturation")
    if not isinstance(steps, Sequence) or not steps:
        raise ValueError("saturation result has no steps to plot")
    for n, step in enumerate(steps):
        _need(step, ("delivery", "latency_ms"), f"saturation step {n}")
        _need(step, ("updates_per_s",), f"saturation step {n}")
    budget = float(result.get("p99_budget_ms") or 100.0)
    sustainable = result.get("highest_sustainable_updates_per_s")
    first = steps[0].get("config") or {}
    figure.suptitle(
        f"saturation: {_n(first.get('students'))} students, {len(steps)} steps of "
        f"{_n(first.get('duration_s'))} s; highest sustainable "
        f"{_n(sustainable or 0)} updates/s (p99 <= {budget:.0f} ms, no loss)"
    )
    axes = figure.subplot_mosaic([["percentiles", "cores"], ["distribution", "distribution"]])
    _saturation_percentiles(axes["percentiles"], steps, budget, sustainable)
    _saturation_cores(axes["cores"], steps)
    _saturation_distributions(axes["distribution"], steps, budget)


def _router(figure: Figure, result: Mapping[str, Any]) -> None:
    events_per_s = _need(result, ("events_per_s",), "router")
    items_per_s = result.get("items_per_s")
    text_ax, bars = figure.subplots(1, 2)
    figure.suptitle(
        f"router: {_n(result.get('events'))} events, "
        f"{result.get('mode', '?')} mode, {result.get('log_partitions', '?')} "
        f"partitions"
    )
    lines = [
        f"{label}: {result[key]:,}"
        if isinstance(result.get(key), (int, float))
        else f"{label}: {result.get(key, 'n/a')}"
        for label, key in (
            ("events/s", "events_per_s"),
            ("items/s", "items_per_s"),
            ("window s", "window_s"),
            ("router CPU util", "router_cpu_util"),
            ("router CPU us/event", "router_cpu_per_event_us"),
            ("mean batch events", "router_mean_batch_events"),
            ("expected items", "expected_items"),
            ("received items", "received_items"),
            ("schema-invalid records", "schema_invalid_records"),
        )
    ]
    text_ax.axis("off")
    text_ax.text(
        0.02,
        0.98,
        "\n".join(lines),
        va="top",
        family="monospace",
        fontsize=12,
        transform=text_ax.transAxes,
    )
    labels, values = ["events/s"], [float(events_per_s)]
    if isinstance(items_per_s, (int, float)):
        labels.append("items/s")
        values.append(float(items_per_s))
    bars.bar(labels, values, color=["tab:blue", "tab:grey"][: len(values)])
    bars.axhline(5000, color="tab:red", linestyle="--", label="brief: router >= 5,000 events/s")
    bars.set_ylabel("per second")
    bars.legend(loc="upper left")


# -- panels -----------------------------------------------------------------------------------


def _distribution(
    ax: Axes, percentiles: Mapping[str, Any], hist: Any, what: str, *, targets: bool
) -> None:
    ax.set_title(f"{what}: distribution")
    points = [
        (q, float(percentiles[name])) for name, q in CDF_POINTS if percentiles.get(name) is not None
    ]
    counts = _histogram_counts(hist)
    if counts is not None:
        edges, shares, total = counts
        # Buckets differ in width on the log axis (whole ms under 10 ms): bar heights are
        # share per decade, so areas, not heights, compare.
        density = [
            share / math.log10(right / left)
            for share, left, right in zip(shares, edges, edges[1:], strict=False)
        ]
        ax.stairs(
            density, edges, fill=True, alpha=0.5, color="tab:blue", label=f"{total:,} samples"
        )
        ax.set_ylabel("share of samples per decade of ms (bars)")
        cumulative = ax.twinx()
        xs, cdf = _cdf(edges, shares)
        cumulative.plot(xs, cdf, color="tab:blue", linewidth=1)
        cumulative.set_ylim(0, 1.02)
        cumulative.set_ylabel("share of samples <= x (line)")
        low, high = xs[0], xs[-1]
    elif points:
        xs = [max(value, FLOOR_MS) for _, value in points]
        ax.plot(
            xs,
            [q for q, _ in points],
            marker="o",
            color="tab:blue",
            label="CDF through the percentiles",
        )
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("share of samples <= x")
        ax.text(
            0.98,
            0.02,
            "no histogram in this result:\nCDF drawn from its percentiles",
            ha="right",
            va="bottom",
            fontsize=9,
            transform=ax.transAxes,
        )
        low, high = min(xs), max(xs)
    else:
        _empty(ax, "no samples in this run")
        return
    ax.set_xscale("log")
    ax.set_xlabel("ms (log scale)")
    for name in MARKED:
        value = percentiles.get(name)
        if value is not None:
            ax.axvline(
                max(float(value), FLOOR_MS),
                color=COLOURS[name],
                linewidth=1.5,
                label=f"{name} {_ms(value)} ms",
            )
    if targets:
        for name, target in TARGETS_MS:
            ax.axvline(
                target,
                color=COLOURS[name],
                linestyle=":",
                linewidth=1.5,
                label=f"target {name} <= {target:.0f} ms",
            )
        low, high = min(low, TARGETS_MS[0][1]), max(high, TARGETS_MS[-1][1])
    ax.set_xlim(max(low / 1.5, FLOOR_MS / 1.5), high * 1.5)
    ax.legend(fontsize="small", loc="upper left")


def _throughput(ax: Axes, throughput: Mapping[str, Any]) -> None:
    ax.set_title("throughput")
    sent = [float(v or 0) for v in throughput.get("sent_per_s") or ()]
    rows = [float(v or 0) for v in throughput.get("received_rows_per_s") or ()]
    if not sent and not rows:
        _empty(ax, "nothing sent or received in this run")
        return
    if sent:
        ax.stairs(sent, label="updates sent by students /s", linewidth=1.5)
    if rows:
        ax.stairs(rows, label="rows received by proctors /s", linewidth=1.5)
    ax.set_xlabel("s since the load started")
    ax.set_ylabel("per second")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small", loc="lower center")


def _latency_over_time(ax: Axes, per_second: Any) -> None:
    ax.set_title("delivery latency by second of send time")
    if not isinstance(per_second, Mapping):
        _empty(ax, "no per-second latency in this result\n(written before it was recorded)")
        return
    if not any(per_second.get("count") or ()):
        _empty(ax, "no deliveries in this run")
        return
    for name in ("p50", "p99", "max"):
        values = [_log_value(v) for v in per_second.get(name) or ()]
        ax.plot(range(len(values)), values, label=name, color=COLOURS[name], linewidth=1)
    for name, target in TARGETS_MS:
        ax.axhline(target, color=COLOURS[name], linestyle=":", label=f"target {name}")
    ax.set_yscale("log")
    ax.set_xlabel("s since the first send")
    ax.set_ylabel("ms (log scale)")
    ax.legend(fontsize="small", loc="upper left", ncols=2)


def _cores(ax: Axes, result: Mapping[str, Any], load_start_ms: Any, load_s: int) -> None:
    resources = result.get("resources") or {}
    machine = resources.get("machine_cores")
    timeline = [p for p in result.get("resources_timeline") or () if isinstance(p, Mapping)]
    if timeline:
        ax.set_title("CPU cores per process (sampled every second)")
        t = [float(p.get("t", n)) for n, p in enumerate(timeline)]
        series = _grouped_series(timeline)
        ax.stackplot(t, *series.values(), labels=list(series), alpha=0.85)
        if isinstance(load_start_ms, (int, float)) and load_start_ms and "wall" in timeline[0]:
            start = t[0] + load_start_ms / 1000 - float(timeline[0]["wall"])
            ax.axvspan(start, start + load_s, color="black", alpha=0.08, label="sending")
        ax.set_xlabel("s since sampling started")
    elif isinstance(resources.get("processes"), Mapping) and resources["processes"]:
        ax.set_title("mean CPU cores per process (no timeline in this result)")
        means = {
            name: float(p.get("cpu_cores_mean") or 0) for name, p in resources["processes"].items()
        }
        ordered = sorted(means.items(), key=lambda kv: kv[1])
        ax.barh([k for k, _ in ordered], [v for _, v in ordered])
        ax.set_xlabel("cores")
        return
    else:
        ax.set_title("CPU cores per process")
        _empty(ax, "no CPU samples in this result")
        return
    if isinstance(machine, (int, float)):
        ax.axhline(machine, color="black", linestyle="--", label=f"{machine} cores on the machine")
    ax.set_ylabel("cores")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the legend above the stack
    ax.legend(fontsize="x-small", loc="upper left", ncols=3)


def _connect_outcomes(ax: Axes, connect: Mapping[str, Any]) -> None:
    ax.set_title("connect outcomes")
    errors = connect.get("errors") or {}
    labels = ["succeeded", *errors]
    values = [int(connect.get("succeeded") or 0), *(int(v) for v in errors.values())]
    colours = ["tab:green"] + ["tab:red"] * len(errors)
    ax.bar(labels, values, color=colours)
    for x, value in enumerate(values):
        ax.annotate(f"{value:,}", (x, value), ha="center", va="bottom")
    ax.set_ylabel("students")


def _saturation_percentiles(
    ax: Axes, steps: Sequence[Mapping[str, Any]], budget: float, sustainable: Any
) -> None:
    ax.set_title("delivery latency per step")
    rates = [float(step["updates_per_s"]) for step in steps]
    for name in (*MARKED, "max"):
        values = [_log_value(step["delivery"]["latency_ms"].get(name)) for step in steps]
        ax.plot(rates, values, marker="o", label=name, color=COLOURS[name])
    ax.axhline(budget, color="black", linestyle="--", label=f"p99 budget {budget:.0f} ms")
    failed = [(rate, step) for rate, step in zip(rates, steps, strict=True) if not step.get("ok")]
    if failed:
        ax.scatter(
            [rate for rate, _ in failed],
            [_log_value(step["delivery"]["latency_ms"].get("p99")) for _, step in failed],
            marker="x",
            s=90,
            color="black",
            zorder=3,
            label="step failed (p99 or loss)",
        )
    for rate, step in failed:
        lost = step["delivery"].get("lost") or 0
        if lost:
            ax.annotate(
                f"lost {lost:,}",
                (rate, _log_value(step["delivery"]["latency_ms"].get("max"))),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=8,
            )
    if isinstance(sustainable, (int, float)) and sustainable:
        ax.axvline(
            sustainable,
            color="tab:green",
            linestyle=":",
            label=f"highest sustainable {sustainable:,} /s",
        )
    ax.set_yscale("log")
    ax.set_xlabel("measured updates/s")
    ax.set_ylabel("ms (log scale)")
    ax.legend(fontsize="small", loc="upper left")


def _saturation_cores(ax: Axes, steps: Sequence[Mapping[str, Any]]) -> None:
    ax.set_title("mean CPU cores per process while sending, per step")
    per_step = []
    for step in steps:
        resources = step.get("resources") or {}
        cores = resources.get("load_phase_cores") or {
            name: p.get("cpu_cores_mean") or 0
            for name, p in (resources.get("processes") or {}).items()
        }
        per_step.append(_group_simulator({k: float(v or 0) for k, v in cores.items()}))
    names = sorted(
        {name for cores in per_step for name in cores},
        key=lambda n: -sum(c.get(n, 0.0) for c in per_step),
    )
    if not names:
        _empty(ax, "no CPU samples in this result")
        return
    labels = [f"{step.get('target_updates_per_s', '?')}/s" for step in steps]
    bottom = [0.0] * len(steps)
    for name in names:
        heights = [cores.get(name, 0.0) for cores in per_step]
        ax.bar(labels, heights, bottom=bottom, label=name)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    machine = (steps[0].get("resources") or {}).get("machine_cores")
    if isinstance(machine, (int, float)):
        ax.axhline(machine, color="black", linestyle="--", label=f"{machine} cores")
    ax.set_xlabel("target rate of the step")
    ax.set_ylabel("cores")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the legend above the bars
    ax.legend(fontsize="x-small", loc="upper left", ncols=3)


def _saturation_distributions(ax: Axes, steps: Sequence[Mapping[str, Any]], budget: float) -> None:
    ax.set_title("delivery latency distribution per step (cumulative)")
    drawn = False
    for step in steps:
        label = f"{step['updates_per_s']:,} /s"
        counts = _histogram_counts(step["delivery"].get("latency_histogram"))
        if counts is not None:
            edges, shares, _ = counts
            ax.plot(*_cdf(edges, shares), label=label)
            drawn = True
            continue
        latency = step["delivery"]["latency_ms"]
        points = [
            (q, max(float(latency[name]), FLOOR_MS))
            for name, q in CDF_POINTS
            if latency.get(name) is not None
        ]
        if points:
            ax.plot(
                [x for _, x in points],
                [q for q, _ in points],
                marker=".",
                label=f"{label} (from percentiles)",
            )
            drawn = True
    if not drawn:
        _empty(ax, "no deliveries in any step")
        return
    ax.axvline(budget, color="black", linestyle="--", label=f"p99 budget {budget:.0f} ms")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("ms (log scale)")
    ax.set_ylabel("share of deliveries <= x")
    ax.legend(fontsize="x-small", loc="lower right", ncols=2)


# -- helpers ----------------------------------------------------------------------------------


def _need(data: Any, keys: tuple[str, ...], where: str) -> Any:
    value = data
    for key in keys:
        if not isinstance(value, Mapping) or value.get(key) is None:
            raise ValueError(f"{where} result has no {'.'.join(keys)!r}: nothing to plot it from")
        value = value[key]
    return value


def _histogram_counts(hist: Any) -> tuple[list[float], list[float], int] | None:
    """(edges, share per bucket, samples) with the outside buckets drawn one bucket wide
    either side; None when there is no histogram or it is empty."""
    if not isinstance(hist, Mapping) or not hist.get("edges_ms"):
        return None
    edges = [float(e) for e in hist["edges_ms"]]
    counts = [
        int(hist.get("below") or 0),
        *(int(c) for c in hist.get("counts") or ()),
        int(hist.get("above") or 0),
    ]
    if len(counts) != len(edges) + 1:
        raise ValueError(f"histogram has {len(edges)} edges but {len(counts) - 2} counts")
    total = sum(counts)
    if not total:
        return None
    drawn_edges = [edges[0] / 2, *edges, edges[-1] * 1.26]
    return drawn_edges, [c / total for c in counts], total


def _cdf(edges: Sequence[float], shares: Sequence[float]) -> tuple[list[float], list[float]]:
    """Cumulative share at each bucket's right edge, from the left edge of the first bucket
    with samples to the right edge of the last."""
    filled = [i for i, share in enumerate(shares) if share]
    first, last = filled[0], filled[-1]
    xs, ys, running = [edges[first]], [0.0], sum(shares[:first])
    for i in range(first, last + 1):
        running += shares[i]
        xs.append(edges[i + 1])
        ys.append(running)
    return xs, ys


def _grouped_series(timeline: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Cores per process per sample, the simulator's processes summed as one, busiest first."""
    names = {k.removesuffix(".cores") for p in timeline for k in p if k.endswith(".cores")}
    series: dict[str, list[float]] = {}
    for point in timeline:
        grouped = _group_simulator({n: float(point.get(f"{n}.cores") or 0) for n in names})
        for name in grouped:
            series.setdefault(name, [])
        for name, values in series.items():
            values.append(grouped.get(name, 0.0))
    length = len(timeline)
    padded = {name: [0.0] * (length - len(v)) + v for name, v in series.items()}
    return dict(sorted(padded.items(), key=lambda kv: -sum(kv[1])))


def _group_simulator(cores: Mapping[str, float]) -> dict[str, float]:
    grouped: dict[str, float] = {}
    for name, value in cores.items():
        key = "simulator" if name.startswith("simulator") else name
        grouped[key] = grouped.get(key, 0.0) + value
    return grouped


def _load_title(result: Mapping[str, Any]) -> str:
    config = result.get("config") or {}
    delivery = result["delivery"]
    latency = delivery["latency_ms"]
    connect = result.get("connect") or {}
    return (
        f"{result['scenario']}: {_n(config.get('students'))} students, "
        f"{config.get('proctors', '?')} proctors, {result.get('updates_per_s', '?')} updates/s "
        f"for {config.get('duration_s', '?')} s; lost {delivery.get('lost', '?')}, "
        f"duplicates {delivery.get('duplicates', '?')}, out of order "
        f"{delivery.get('out_of_order', '?')}, superseded "
        f"{delivery.get('superseded_by_newer_state', '?')}\nlatency ms: "
        + "  ".join(f"{q} {_ms(latency.get(q))}" for q in (*MARKED, "max"))
        + f"; connected {connect.get('succeeded', '?')}/{connect.get('attempted', '?')}"
    )


def _n(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "?" if value is None else str(value)
    return f"{value:,}"


def _ms(value: Any) -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.1f}"


def _log_value(value: Any) -> float:
    """For a log axis: null becomes a gap (NaN), 0 ms the floor."""
    if not isinstance(value, (int, float)):
        return math.nan
    return max(float(value), FLOOR_MS)


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulator.plot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results", type=Path, nargs="+", help="bench/results/*.json")
    parser.add_argument(
        "--out", type=Path, help="PNG path (one result only; default: the result's path with .png)"
    )
    args = parser.parse_args(argv)
    if args.out is not None and len(args.results) > 1:
        parser.error("--out takes one result")
    status = 0
    for source in args.results:
        try:
            written = plot_result(
                json.loads(source.read_text()), args.out or source.with_suffix(".png")
            )
        except (OSError, ValueError) as error:  # JSONDecodeError is a ValueError
            print(f"{source}: {error}", file=sys.stderr)
            status = 1
            continue
        print(written)
    return status


if __name__ == "__main__":
    sys.exit(main())
