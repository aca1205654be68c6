"""Router settings (``PROCTOR_ROUTER__*``) on top of the shared ones."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from adapters.settings import CommonSettings


class RouterOptions(BaseModel):
    app_id: str = Field(
        default="router",
        description="Faust app id, hence the consumer group on the event log; one per deployment",
    )
    instance: str = Field(
        default_factory=lambda: f"router-{uuid.uuid4().hex[:12]}",
        description="this process's identity (Kafka client id)",
    )
    ops_host: str = Field(default="127.0.0.1", description="ops server listen address")
    ops_port: int = Field(default=9101, description="ops server port: /healthz /readyz /metrics")
    data_dir: str = Field(
        default_factory=lambda: str(Path(tempfile.gettempdir()) / "proctor-router"),
        description=(
            "Faust's data directory (the router keeps no table in it); by default"
            " proctor-router in the system's temporary directory"
        ),
    )
    engine: Literal["aiokafka", "faust"] = Field(
        default="aiokafka",
        description=(
            "what consumes the log: a plain aiokafka group consumer, or a Faust agent; same"
            " batching, acking and commit contract, but Faust costs about 3 times the CPU"
            " per event at a steady pace (docs/benchmarks.md, 'Router engines')"
        ),
    )
    fetch_min_bytes: int = Field(
        default=16_384,
        ge=1,
        description=(
            "aiokafka engine: the broker holds a log fetch until this much has gathered or"
            " fetch_max_wait_ms passed, i.e. a batching window at the broker"
        ),
    )
    fetch_max_wait_ms: int = Field(
        default=5,
        ge=1,
        description=(
            "aiokafka engine: the longest a log fetch is held; 5 ms halves the router's CPU per"
            " event at 1,000 events/s against 1 byte / no wait (149 vs 306 us), for ~3 ms of p50"
        ),
    )
    busy_fetch_max_wait_ms: int = Field(
        default=10,
        ge=1,
        description=(
            "aiokafka engine: the window while events arrive faster than busy_events_per_s;"
            " at 2,000 events/s 10 ms instead of 5 took 12 % off the CPU of the whole system"
            " (router, Kafka, gateways) at no cost in latency (docs/benchmarks.md)"
        ),
    )
    busy_events_per_s: float = Field(
        default=1000.0,
        ge=0,
        description=(
            "aiokafka engine: above this rate (per router, over whole seconds) fetches use"
            " busy_fetch_max_wait_ms; below 3/4 of it fetch_max_wait_ms again (0: never)"
        ),
    )
    calm_events_per_s: float = Field(
        default=300.0,
        ge=0,
        description=(
            "aiokafka engine: while events arrive slower than this (per router, over whole"
            " seconds; the window opens at this rate and closes below 3/4 of it) fetches answer"
            " on the first event: a 5 ms window saves no fetch below 200 events/s, it only"
            " delays them (0: always the window)"
        ),
    )
    batch_max_events: int = Field(
        default=1000, ge=1, description="most log events routed as one batch"
    )
    batch_within_s: float = Field(
        default=0.002,
        gt=0,
        description=(
            "Faust engine: how long a batch waits to fill; every event waits up to this long."
            " Faust fills no batch while one is being routed, so shorter waits mean smaller"
            " batches: on a quiet 2-core box 2 ms gives ~11k events/s, 5 ms ~12.5k but"
            " +3 ms latency (bench/router_throughput.py)"
        ),
    )
    start_offsets_patience_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "on taking partitions, how long the committed offsets are asked for again while"
            " Kafka answers with a retriable error (a group coordinator still loading after a"
            " broker stall); past it the router stops"
        ),
    )
    max_record_bytes: int = Field(
        default=512 * 1024,
        ge=16 * 1024,
        description="a slot's items for one batch are split into records of at most this size",
    )
    batches_in_flight: int = Field(
        default=16, ge=1, description="routed batches whose deliveries may be awaiting acks"
    )
    delivery_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description=(
            "a batch's deliveries must land within this time, or the router stops before"
            " committing it (a restart routes it again); longer than the Kafka stalls it"
            " rides out: at 30 s a 30 s stall with deliveries in flight stopped the router"
        ),
    )
    presence_catchup_timeout_s: float = Field(
        default=120.0, gt=0, description="bound on re-reading the presence topic at start"
    )
    beat_interval_s: float = Field(
        default=1.0,
        gt=0,
        description=(
            "how often the router tells each gateway with watchers which log partitions it"
            " routes (RouterBeat): gateways flag their proctors' view stale without it"
        ),
    )
    commit_interval_s: float = Field(
        default=1.0, gt=0, description="how often routed log offsets are committed"
    )
    stream_buffer_maxsize: int = Field(
        default=4096,
        ge=1,
        description="Faust engine: log events buffered per partition ahead of routing",
    )


class RouterSettings(CommonSettings):
    router: RouterOptions = RouterOptions()
