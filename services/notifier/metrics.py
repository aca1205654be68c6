"""Every Prometheus metric of the notifier, built in one place on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters.consumer_lag import ConsumerLag
from adapters.group_reader import ReaderMetrics
from adapters.runtime_metrics import add_runtime_collectors

_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        add_runtime_collectors(registry, "notifier")
        self.offline = Counter(
            "notifier_offline_events_total",
            "student.offline events written",
            ["reason"],
            registry=registry,
        )
        self.back_online = Counter(
            "notifier_back_online_events_total",
            "student.back_online events written, by why the student had been offline",
            ["reason"],
            registry=registry,
        )
        self.alerts = Counter(
            "notifier_alerts_total", "alert.raised events written", ["kind"], registry=registry
        )
        self.connections = Gauge(
            "notifier_tracked_connections",
            "student connections on gateways believed alive",
            registry=registry,
        )
        self.liveness_partitions = Gauge(
            "notifier_liveness_partitions",
            "heartbeat partitions this notifier owns and judges (its share of the attempts)",
            registry=registry,
        )
        self.liveness_rebuilds = Counter(
            "notifier_liveness_rebuilds_total",
            "liveness state rebuilt from presence and recent heartbeats (start, rebalance)",
            registry=registry,
        )
        self.offline_attempts = Gauge(
            "notifier_offline_attempts", "attempts whose verdict is offline", registry=registry
        )
        self.detection_lag = Histogram(
            "notifier_detection_lag_seconds",
            "offline verdict written minus the moment its rule fell due",
            ["reason"],
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self.bad_records = Counter(
            "notifier_bad_records_total",
            "records skipped because they did not decode",
            ["topic"],
            registry=registry,
        )
        self.log_probe_latency = Histogram(
            "notifier_log_probe_latency_seconds",
            "time for the notifier's own probe to come back through the heartbeat partition",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self.log_stalls = Counter(
            "notifier_log_stalls_total",
            "times the log was found stalled (loss-by-silence verdicts waited, windows renewed)",
            registry=registry,
        )
        self.write_retries = Counter(
            "notifier_write_retries_total",
            "batches of verdicts or alerts Kafka had not taken in time, waited for or resent",
            ["topic"],
            registry=registry,
        )
        self.exam_connected = Gauge(
            "notifier_exam_connected_students",
            "students of an exam with a connection open on a gateway believed alive",
            ["exam"],
            registry=registry,
        )
        # Per exam (not per reason) and only for attempts not yet submitted: many in one exam
        # at once is an offline storm, while the closes at an exam's end raise none.
        self.exam_offline_alerts = Counter(
            "notifier_exam_offline_alerts",
            "offline alerts raised (students of an exam lost before submitting)",
            ["exam"],
            registry=registry,
        )
        self.core = ReaderMetrics.of("notifier", registry)
        # The alerts loop's group on the log (the liveness loop reads without a group).
        self.lag = ConsumerLag("notifier", registry)

    def reader(self) -> ReaderMetrics:
        return self.core
