"""Prometheus metrics of the status service, all in one place.

Coalescing ratio = ``status_dynamo_updates_total`` / ``status_dynamo_writes_total`` (all outcomes).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters.consumer_lag import ConsumerLag, LagSource
from adapters.group_reader import ReaderMetrics
from adapters.runtime_metrics import add_runtime_collectors
from domain.first_attempt import FirstAttemptBuffer

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class StatusMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        add_runtime_collectors(registry, "status")
        self.records = Counter(
            "status_records", "log records consumed (decoded or not)", registry=registry
        )
        self.undecodable = Counter(
            "status_undecodable_records",
            "log records that failed to decode: counted and put aside as dead letters",
            registry=registry,
        )
        self.state_changes = Counter(
            "status_state_changes",
            "attempt states written to Redis (one per changed attempt per batch)",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "status_batch_seconds",
            "decode, fold and Redis write of one getmany batch",
            buckets=_FAST,
            registry=registry,
        )
        self.state_loads = Counter(
            "status_state_loads",
            "attempt states looked up in Redis on a cache miss",
            registry=registry,
        )
        self.resyncs = Counter(
            "status_resyncs",
            "states found in Redis ahead of the committed log and re-sent to DynamoDB",
            registry=registry,
        )
        self.cached_states = Gauge(
            "status_cached_states", "attempt states held in memory", registry=registry
        )
        self.dynamo_updates = Counter(
            "status_dynamo_updates",
            "item updates offered for a DynamoDB write, before coalescing",
            registry=registry,
        )
        self.dynamo_skipped = Counter(
            "status_dynamo_skipped",
            "updates dropped unwritten: they lose to the item's known holder or a staged state",
            registry=registry,
        )
        self.dynamo_writes = Counter(
            "status_dynamo_writes",
            "conditional DynamoDB writes by outcome (refused = replay, duplicate or later"
            " attempt; rejected = an invalid item, put aside)",
            ["outcome"],
            registry=registry,
        )
        self.dynamo_pending = Gauge(
            "status_dynamo_pending_items",
            "items waiting for their DynamoDB write",
            registry=registry,
        )
        self.flush_seconds = Histogram(
            "status_dynamo_flush_seconds",
            "one coalesced DynamoDB flush, retries included",
            buckets=_FAST,
            registry=registry,
        )
        self.store_retries = Counter(
            "status_store_retries",
            "failed view store calls, retried with backoff",
            ["store"],
            registry=registry,
        )
        # status_kafka_errors: the name its log-consumer errors have always had.
        self.core = ReaderMetrics.of("status", registry, fetch_errors="kafka_errors")
        self.snapshot_rebuilds = Counter(
            "status_snapshot_rebuilds",
            "times this instance found the Redis snapshot lost (or re-begun) and re-folded its"
            " partitions from the log's beginning",
            registry=registry,
        )
        self.snapshot_rebuilding = Gauge(
            "status_snapshot_rebuilding_partitions",
            "partitions of this instance being re-folded into the Redis snapshot",
            registry=registry,
        )
        self.ready = Gauge(
            "status_ready", "1 when consuming and every store answers", registry=registry
        )
        self.dynamo_backlog_age = Gauge(
            "status_dynamo_backlog_age_seconds",
            "how long the longest-waiting item has waited for its DynamoDB write (read when"
            " scraped)",
            registry=registry,
        )
        self.lag = ConsumerLag("status", registry)

    def follow(self, reader: LagSource, buffer: FirstAttemptBuffer) -> None:
        """Read the consumer lag and the DynamoDB backlog's age from these when scraped."""
        self.lag.follow(reader)
        self.dynamo_backlog_age.set_function(buffer.oldest_wait_s)

    def reader(self) -> ReaderMetrics:
        return self.core
