"""Process and interpreter collectors (CPU, memory, file descriptors, GC, Python version) on a
service's own registry: the services do not use prometheus_client's global registry, which is
where these would otherwise be."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector


def add_runtime_collectors(registry: CollectorRegistry) -> None:
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
