"""Process and interpreter collectors (CPU, memory, file descriptors, GC, Python version) on a
service's own registry: the services do not use prometheus_client's global registry, which is
where these would otherwise be. And each collection's stop of the event loop, by generation
(``<service>_gc_pause_seconds``), from the collector tuning (adapters/gc_tuning.py)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from adapters.gc_tuning import observe_pauses

_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def add_runtime_collectors(registry: CollectorRegistry, service: str) -> Histogram:
    """The collectors, and ``<service>_gc_pause_seconds`` fed by the collector tuning."""
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    pauses = Histogram(
        f"{service}_gc_pause_seconds",
        "garbage collections: each one stops the event loop for this long",
        ["generation"],
        buckets=_PAUSE_BUCKETS,
        registry=registry,
    )
    by_generation = [pauses.labels(str(generation)) for generation in range(3)]
    observe_pauses(lambda generation, seconds: by_generation[generation].observe(seconds))
    return pauses
