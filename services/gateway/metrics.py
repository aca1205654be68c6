"""Every Prometheus metric of the gateway, built in one place on an injected registry."""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters.runtime_metrics import add_runtime_collectors

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


_M = TypeVar("_M", Counter, Gauge, Histogram)


class Children(Generic[_M]):
    """A one-label metric's children by label value, for the per-frame paths.

    ``labels`` takes a lock and checks its arguments on every call; the values here are a
    handful of frame kinds and error codes, so each child is looked up once.
    """

    def __init__(self, metric: _M) -> None:
        self._metric: _M = metric
        self._children: dict[str, _M] = {}

    def __call__(self, value: str) -> _M:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self._metric.labels(value)
        return child


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.gc_pause_seconds = add_runtime_collectors(registry, "gateway")
        self.connections = Gauge(
            "gateway_connections", "open WebSocket connections", ["role"], registry=registry
        )
        self.frames_in = Counter(
            "gateway_frames_in_total", "client frames received", ["kind"], registry=registry
        )
        self.frames_rejected = Counter(
            "gateway_frames_rejected_total", "client frames refused", ["code"], registry=registry
        )
        self.frame_in = Children(self.frames_in)
        self.frame_rejected = Children(self.frames_rejected)
        self.events_published = Counter(
            "gateway_events_published_total", "events acknowledged by Kafka", registry=registry
        )
        self.publish_seconds = Histogram(
            "gateway_publish_seconds",
            "frame received to Kafka acknowledgement",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.deliveries = Counter(
            "gateway_delivery_items_total", "delivery items consumed", ["kind"], registry=registry
        )
        self.delivery_item = Children(self.deliveries)
        self.delivery_seconds = Histogram(
            "gateway_delivery_seconds",
            "event written to the log to fan-out on this gateway",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.coalesced = Counter(
            "gateway_updates_coalesced_total",
            "student rows replaced by a newer one before sending",
            registry=registry,
        )
        self.slow_consumers = Counter(
            "gateway_slow_consumer_closes_total",
            "connections cut off for falling behind",
            registry=registry,
        )
        self.watched_exams = Gauge(
            "gateway_watched_exams", "exams with a live view here", registry=registry
        )
        self.view_stale = Gauge(
            "gateway_view_stale",
            "1 while proctors here watch a view no router has beaten for (router or log down)",
            registry=registry,
        )
        self.publish_deadline_missed = Counter(
            "gateway_publish_deadline_missed_total",
            "event frames answered unavailable because Kafka missed publish_deadline_s",
            registry=registry,
        )
        self.resends_joined = Counter(
            "gateway_resends_joined_total",
            "identical resends answered by the same frame's publish here (no second copy)",
            registry=registry,
        )
        self.late_publishes = Counter(
            "gateway_late_publishes_total",
            "events Kafka took after their frame was answered unavailable (resends dedupe)",
            registry=registry,
        )
        self.log_stalled = Gauge(
            "gateway_log_stalled",
            "1 while the event log counts as stalled (frames answered unavailable at once)",
            registry=registry,
        )
        self.guard_unchecked = Counter(
            "gateway_guard_unchecked_total",
            "id or connect checks skipped because Redis failed (the gateway fails open)",
            ["check"],
            registry=registry,
        )
        self.flood_closes = Counter(
            "gateway_flood_closes_total", "connections closed 1008 for flooding", registry=registry
        )
        self.aborted = Counter(
            "gateway_sockets_aborted_total",
            "sockets aborted because the peer did not finish a close within close_grace_s",
            registry=registry,
        )
        self.jwks_refreshes = Counter(
            "gateway_jwks_refresh_total",
            "fetches of the LMS's key set (JWKS) by outcome: ok, failed (the last good set stays"
            " in use), throttled (an unknown kid within token_jwks_min_refresh_s: no fetch)",
            ["outcome"],
            registry=registry,
        )
        self.watch_seconds = Histogram(
            "gateway_watch_handshake_seconds",
            "subscribe to snapshot sent (first proctor of an exam)",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
