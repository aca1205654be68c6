"""Prometheus metrics of the router, all in one place.

Throughput = rate of ``router_events``; fan-out = ``router_items`` / ``router_events``;
records per batch = ``router_records`` / ``router_batch_events_count``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters.group_reader import ReaderMetrics
from adapters.runtime_metrics import add_runtime_collectors

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        add_runtime_collectors(registry, "router")
        self.events = Counter(
            "router_events", "log events processed (routed to someone or not)", registry=registry
        )
        self.bad_events = Counter(
            "router_bad_events",
            "log records without a routable exam/attempt/type: put aside as dead letters",
            registry=registry,
        )
        self.items = Counter("router_items", "delivery items produced", ["kind"], registry=registry)
        self.records = Counter(
            "router_records",
            "DeliveryBatch records produced to the deliveries topic",
            registry=registry,
        )
        self.record_bytes = Counter(
            "router_record_bytes", "bytes of DeliveryBatch records produced", registry=registry
        )
        self.batch_events = Histogram(
            "router_batch_events",
            "log events per routed batch",
            buckets=_SIZES,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "router_batch_seconds",
            "routing and producing one batch, until its deliveries landed",
            buckets=_FAST,
            registry=registry,
        )
        self.lag = Gauge(
            "router_lag_events",
            "log events not yet routed, per owned partition (at the last batch)",
            ["partition"],
            registry=registry,
        )
        self.owned_partitions = Gauge(
            "router_owned_partitions", "log partitions assigned to this worker", registry=registry
        )
        self.presence_records = Counter(
            "router_presence_records", "presence records applied", registry=registry
        )
        self.bad_presence = Counter(
            "router_bad_presence_records",
            "presence records that failed to decode or name a slot without a deliveries"
            " partition: counted, logged, skipped",
            registry=registry,
        )
        self.watches = Gauge("router_watches", "live exam watches", registry=registry)
        self.connections = Gauge(
            "router_student_connections", "live student connections", registry=registry
        )
        self.watch_ready = Counter(
            "router_watch_ready", "WatchReady items produced", registry=registry
        )
        self.rebalances = Counter(
            "router_rebalances", "partition assignments received", registry=registry
        )
        self.start_offsets_retries = Counter(
            "router_start_offsets_retries",
            "committed offsets asked for again after a retriable error, on taking partitions",
            registry=registry,
        )
        self.core = ReaderMetrics.of("router", registry)
        self.beats = Counter(
            "router_beats",
            "RouterBeat records sent to gateway slots with watchers",
            registry=registry,
        )

    def reader(self) -> ReaderMetrics:
        return self.core
