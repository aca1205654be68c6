"""Every Prometheus metric of the gateway, built in one place on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections = Gauge(
            "gateway_connections", "open WebSocket connections", ["role"], registry=registry
        )
        self.frames_in = Counter(
            "gateway_frames_in_total", "client frames received", ["kind"], registry=registry
        )
        self.frames_rejected = Counter(
            "gateway_frames_rejected_total", "client frames refused", ["code"], registry=registry
        )
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
        self.delivery_seconds = Histogram(
            "gateway_delivery_seconds",
            "event written to the log to fan-out on this gateway",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.gc_pause_seconds = Histogram(
            "gateway_gc_pause_seconds",
            "garbage collections: each one stops the event loop for this long",
            ["generation"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
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
        self.watch_seconds = Histogram(
            "gateway_watch_handshake_seconds",
            "subscribe to snapshot sent (first proctor of an exam)",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
