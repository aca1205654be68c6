"""The Grafana dashboards, as code: ``python -m deploy.grafana.build`` writes them to
``deploy/grafana/dashboards/*.json`` (committed; a test regenerates and compares).

Built with the Grafana Foundation SDK. Every panel queries the Prometheus that scrapes the
services (``infra/monitoring``, or compose's and Kubernetes' own): jobs ``gateway``,
``router``, ``status``, ``notifier``, the recorded series of
``deploy/prometheus/recording-rules.yml``, and the process collectors every service has.
An end-to-end test (tests/e2e/test_dashboards.py) runs each panel's query against a real
Prometheus scraping a small exam and requires data from all of them.

Counters with labels have no series until a label value is first used (no frame refused yet,
no record put aside): those panels add ``or vector(0)`` so "none" reads as 0, not as a gap.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
SERVICES = ("gateway", "router", "status", "notifier")


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Chart:
    title: str
    queries: Sequence[Query]
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"  # or "stat": the latest value, large
    width: int = 12


def q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def _targets(queries: Iterable[Query]) -> Iterator[prometheus.Dataquery]:
    for ref, query in zip("ABCDEFGH", queries, strict=False):
        target = prometheus.Dataquery().expr(query.expr).ref_id(ref).datasource(DATASOURCE)
        if query.legend:
            target = target.legend_format(query.legend)
        yield target


def _panel(chart: Chart) -> stat.Panel | timeseries.Panel:
    panel: stat.Panel | timeseries.Panel
    if chart.kind == "stat":
        panel = stat.Panel().height(4)
    else:
        panel = timeseries.Panel().height(8).fill_opacity(10).line_width(1)
    panel = panel.title(chart.title).datasource(DATASOURCE).unit(chart.unit).span(chart.width)
    if chart.description:
        panel = panel.description(chart.description)
    for target in _targets(chart.queries):
        panel = panel.with_target(target)
    return panel


def _datasource_variable() -> dash.DatasourceVariable:
    return dash.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def _dashboard(
    uid: str,
    title: str,
    description: str,
    rows: Sequence[tuple[str, Sequence[Chart]]],
    variables: Sequence[Any] = (),
) -> dict[str, Any]:
    board = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["proctoring"])
        .refresh("10s")
        .time("now-30m", "now")
        .timezone("browser")
        .with_variable(_datasource_variable())
    )
    for variable in variables:
        board = board.with_variable(variable)
    for row_title, charts in rows:
        board = board.with_row(dash.Row(row_title))
        for chart in charts:
            board = board.with_panel(_panel(chart))
    encoded: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(board.build()))
    return encoded


def _process_charts(job: str) -> list[Chart]:
    selector = f'{{job="{job}"}}'
    return [
        Chart(
            "CPU (cores)",
            [q(f"rate(process_cpu_seconds_total{selector}[{RATE}])", "{{instance}}")],
            unit="short",
            description="One event loop per process: near 1.0 it is the bottleneck.",
            width=6,
        ),
        Chart(
            "Resident memory",
            [q(f"process_resident_memory_bytes{selector}", "{{instance}}")],
            unit="bytes",
            width=6,
        ),
        Chart(
            "Open file descriptors / limit",
            [q(f"process_open_fds{selector} / process_max_fds{selector}", "{{instance}}")],
            unit="percentunit",
            width=6,
        ),
        Chart(
            "GC collections/s",
            [
                q(
                    f"sum by (instance, generation) "
                    f"(rate(python_gc_collections_total{selector}[{RATE}]))",
                    "{{instance}} gen {{generation}}",
                )
            ],
            width=6,
        ),
    ]


def overview() -> dict[str, Any]:
    headline = [
        Chart("Exams in progress", [q("proctor:exams_in_progress:count")], kind="stat", width=4),
        Chart(
            "Students connected",
            [q('sum(proctor:gateway_connections:sum{role="student"})')],
            kind="stat",
            width=5,
        ),
        Chart(
            "Proctors connected",
            [q('sum(proctor:gateway_connections:sum{role="proctor"})')],
            kind="stat",
            width=5,
        ),
        Chart("Updates/s", [q("proctor:updates:rate1m")], unit="reqps", kind="stat", width=5),
        Chart(
            "Delivery p99",
            [q("proctor:delivery_latency_seconds:p99_1m")],
            unit="s",
            kind="stat",
            width=5,
            description="Event in the log to fan-out on a gateway; budget 100 ms.",
        ),
    ]
    traffic = [
        Chart(
            "Updates and deliveries per second",
            [
                q("proctor:updates:rate1m", "updates acknowledged"),
                q("proctor:delivery_items:rate1m", "rows to proctors"),
            ],
            unit="reqps",
        ),
        Chart(
            "Delivery latency",
            [
                q("proctor:delivery_latency_seconds:p50_1m", "p50"),
                q("proctor:delivery_latency_seconds:p95_1m", "p95"),
                q("proctor:delivery_latency_seconds:p99_1m", "p99"),
                q("proctor:publish_latency_seconds:p99_1m", "publish p99"),
            ],
            unit="s",
        ),
        Chart(
            "Connections per gateway",
            [q("instance:gateway_connections:sum", "{{instance}} {{role}}")],
        ),
        Chart(
            "Consumer lag per group (events)",
            [q("job:consumer_lag_events:sum", "{{job}}")],
        ),
    ]
    health = [
        Chart(
            "Services up",
            [q(f'sum by (job) (up{{job=~"{"|".join(SERVICES)}"}})', "{{job}}")],
            description="Instances answering /metrics, per service.",
        ),
        Chart(
            "Alerts firing",
            [q('count by (alertname) (ALERTS{alertstate="firing"}) or vector(0)', "{{alertname}}")],
        ),
    ]
    return _dashboard(
        "proctor-overview",
        "Proctoring: overview",
        "Exams, connections, updates per second and delivery latency across the system.",
        [("Now", headline), ("Traffic and latency", traffic), ("Health", health)],
    )


def _service_charts(job: str) -> list[Chart]:
    if job == "gateway":
        return [
            Chart(
                "Connections",
                [q('gateway_connections{job="gateway"}', "{{instance}} {{role}}")],
            ),
            Chart(
                "Client frames/s by kind",
                [
                    q(
                        f"sum by (kind) (rate(gateway_frames_in_total[{RATE}]))",
                        "{{kind}}",
                    )
                ],
                unit="reqps",
            ),
            Chart(
                "Publish and delivery p99",
                [
                    q(
                        "histogram_quantile(0.99, sum by (instance, le) "
                        f"(rate(gateway_publish_seconds_bucket[{RATE}])))",
                        "publish {{instance}}",
                    ),
                    q(
                        "histogram_quantile(0.99, sum by (instance, le) "
                        f"(rate(gateway_delivery_seconds_bucket[{RATE}])))",
                        "delivery {{instance}}",
                    ),
                ],
                unit="s",
            ),
            Chart(
                "Frames refused/s",
                [q(f"sum by (code) (rate(gateway_frames_rejected_total[{RATE}])) or vector(0)")],
                unit="reqps",
            ),
            Chart(
                "Log stalled / view stale",
                [
                    q("gateway_log_stalled", "log stalled {{instance}}"),
                    q("gateway_view_stale", "view stale {{instance}}"),
                ],
                description="1 while the events log refuses writes / no router beats.",
            ),
            Chart(
                "Event loop stopped by GC",
                [
                    q(
                        f"sum by (instance) (rate(gateway_gc_pause_seconds_sum[{RATE}]))"
                        " or vector(0)",
                        "{{instance}}",
                    )
                ],
                unit="percentunit",
                # The share of time says what collections cost whatever their number: with
                # frozen survivors (adapters/gc_tuning.py) they are frequent and short.
                description="Share of time the gateway's event loop stood still in collections.",
            ),
        ]
    if job == "router":
        return [
            Chart(
                "Events routed/s and items produced/s",
                [
                    q(f"sum(rate(router_events_total[{RATE}]))", "events"),
                    q(f"sum by (kind) (rate(router_items_total[{RATE}]))", "items {{kind}}"),
                ],
                unit="reqps",
            ),
            Chart(
                "Batch time p99",
                [
                    q(
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(router_batch_seconds_bucket[{RATE}])))",
                        "p99",
                    )
                ],
                unit="s",
            ),
            Chart(
                "Lag per partition (events)",
                [q("router_lag_events", "{{instance}} p{{partition}}")],
            ),
            Chart(
                "Routing tables",
                [
                    q("sum(router_watches)", "exam watches"),
                    q("sum(router_student_connections)", "student connections"),
                    q("sum(router_owned_partitions)", "owned partitions"),
                ],
            ),
        ]
    if job == "status":
        return [
            Chart(
                "Records folded/s",
                [q(f"sum(rate(status_records_total[{RATE}]))", "records")],
                unit="reqps",
            ),
            Chart(
                "Lag per partition (events)",
                [q("status_lag_events", "{{instance}} p{{partition}}")],
            ),
            Chart(
                "DynamoDB backlog",
                [
                    q("status_dynamo_backlog_age_seconds", "oldest wait {{instance}}"),
                ],
                unit="s",
                description="Alert at 5 minutes (ProctorDynamoBacklogOld).",
            ),
            Chart(
                "DynamoDB items waiting and writes/s",
                [
                    q("sum(status_dynamo_pending_items)", "waiting"),
                    q(
                        f"sum by (outcome) (rate(status_dynamo_writes_total[{RATE}]))",
                        "writes {{outcome}}",
                    ),
                ],
            ),
            Chart(
                "Batch time p99",
                [
                    q(
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(status_batch_seconds_bucket[{RATE}])))",
                        "p99",
                    )
                ],
                unit="s",
            ),
            Chart(
                "Store retries/s and records put aside",
                [
                    q(
                        f"sum by (store) (rate(status_store_retries_total[{RATE}])) or vector(0)",
                        "retries {{store}}",
                    ),
                    q("sum(status_dead_letters_total) or vector(0)", "put aside (total)"),
                ],
            ),
        ]
    return [
        Chart(
            "Connections tracked and offline attempts",
            [
                q("sum(notifier_tracked_connections)", "tracked connections"),
                q("sum(notifier_offline_attempts)", "offline attempts"),
            ],
        ),
        Chart(
            "Offline verdicts/s by reason",
            [
                q(
                    f"sum by (reason) (rate(notifier_offline_events_total[{RATE}])) or vector(0)",
                    "{{reason}}",
                )
            ],
            unit="reqps",
        ),
        Chart(
            "Log probe latency p99",
            [
                q(
                    "histogram_quantile(0.99, sum by (le) "
                    f"(rate(notifier_log_probe_latency_seconds_bucket[{RATE}])))",
                    "p99",
                )
            ],
            unit="s",
            description="The notifier's own probe through the heartbeat partition.",
        ),
        Chart(
            "Lag of the alerts loop (events)",
            [q("notifier_lag_events", "{{instance}} p{{partition}}")],
        ),
        Chart(
            "Alerts raised/s by kind",
            [
                q(
                    f"sum by (kind) (rate(notifier_alerts_total[{RATE}])) or vector(0)",
                    "{{kind}}",
                )
            ],
            unit="reqps",
        ),
        Chart(
            "Log stalls and write retries (total)",
            [
                q("sum(notifier_log_stalls_total)", "log stalls"),
                q("sum(notifier_write_retries_total) or vector(0)", "write retries"),
            ],
        ),
        Chart(
            "Heartbeat partitions owned",
            [
                q("notifier_liveness_partitions", "{{instance}}"),
                q("sum(notifier_liveness_partitions)", "all notifiers"),
            ],
            description=(
                "Each notifier judges the attempts of the heartbeat partitions it owns; the sum"
                " is the topic's partition count unless a rebalance is under way."
            ),
        ),
        Chart(
            "Liveness rebuilds (total)",
            [q("sum by (instance) (notifier_liveness_rebuilds_total)", "{{instance}}")],
            description="One per start and per rebalance that moved heartbeat partitions.",
        ),
    ]


def service(job: str) -> dict[str, Any]:
    return _dashboard(
        f"proctor-{job}",
        f"Proctoring: {job}",
        f"The {job} service: its own signals, then its processes.",
        [(job.capitalize(), _service_charts(job)), ("Processes", _process_charts(job))],
    )


def exam_day() -> dict[str, Any]:
    exam = (
        dash.QueryVariable("exam")
        .label("Exam")
        .query("label_values(notifier_exam_connected_students, exam)")
        .datasource(DATASOURCE)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
    )
    selector = '{exam=~"$exam"}'
    exams = [
        Chart(
            "Students connected per exam",
            [q(f"exam:connected_students:max{selector}", "{{exam}}")],
            description="Students with a page open on a live gateway.",
        ),
        Chart(
            "Students lost before submitting (last 5 min)",
            [
                q(
                    f"sum by (exam) (increase(notifier_exam_offline_alerts_total{selector}[5m]))",
                    "{{exam}}",
                )
            ],
            description="An offline storm (ProctorOfflineStorm) is 10+ and 20 %+ in 2 min.",
        ),
    ]
    system = [
        Chart("Updates/s", [q("proctor:updates:rate1m", "updates")], unit="reqps", width=8),
        Chart(
            "Delivery p99",
            [q("proctor:delivery_latency_seconds:p99_1m", "p99")],
            unit="s",
            width=8,
        ),
        Chart(
            "Slowest consumer's lag (events)",
            [q("max(job:consumer_lag_events:sum)", "lag")],
            width=8,
        ),
        Chart(
            "Alerts firing",
            [
                q(
                    'count by (alertname) (ALERTS{alertstate="firing", alertname=~"Proctor.*"})'
                    " or vector(0)",
                    "{{alertname}}",
                )
            ],
            width=24,
        ),
    ]
    return _dashboard(
        "proctor-exam-day",
        "Proctoring: exam day",
        "Per exam: who is connected and who was lost; the system's vital signs beside.",
        [("Exams", exams), ("System", system)],
        variables=[exam],
    )


def dashboards() -> dict[str, dict[str, Any]]:
    boards = {"overview": overview(), "exam-day": exam_day()}
    boards.update({job: service(job) for job in SERVICES})
    return boards


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--check", action="store_true", help="fail if the files differ")
    args = parser.parse_args(argv)
    DASHBOARDS_DIR.mkdir(parents=True, exist_ok=True)
    stale = []
    for name, board in dashboards().items():
        path = DASHBOARDS_DIR / f"{name}.json"
        text = render(board)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (python -m deploy.grafana.build): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
