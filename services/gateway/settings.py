"""Gateway settings (``PROCTOR_GATEWAY__*``) on top of the shared ones."""

from __future__ import annotations

import uuid
from pathlib import Path

from pydantic import BaseModel, Field

from adapters.settings import CommonSettings


class GatewayOptions(BaseModel):
    slot: int = Field(default=0, ge=0, description="unique per gateway; its deliveries partition")
    instance: str = Field(
        default_factory=lambda: f"gw-{uuid.uuid4().hex[:12]}",
        description="this process's identity; a new one per start",
    )
    host: str = Field(default="127.0.0.1", description="listen address")
    port: int = Field(
        default=8080,
        description="public port: WebSocket and web pages (and the ops routes, unless ops_port)",
    )
    ops_host: str = Field(default="127.0.0.1", description="bind address of the private ops port")
    ops_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "private port for /healthz /readyz /metrics, off the public port (0: any free port);"
            " null: served on the public port beside /ws (one port for local runs)"
        ),
    )
    tls_cert: str | None = Field(default=None, description="PEM certificate: serve wss")
    tls_key: str | None = Field(default=None, description="PEM private key for tls_cert")
    token_secret: str = Field(
        default="dev-only-secret-change-me-0123456789abcdef",
        description="HS256 key shared with the LMS (at least 32 bytes)",
    )
    token_issuer: str = Field(default="lms", description="expected `iss` claim")
    token_leeway_s: float = Field(
        default=10.0,
        ge=0,
        le=300,
        description="clock skew allowed when checking a token's `exp`, `iat` and `nbf`",
    )
    token_jwks_url: str | None = Field(
        default=None,
        description=(
            "the LMS's JWKS URL: also accept tokens the LMS signs with its own key (RS256,"
            " ES256, PS256, EdDSA) and names by `kid`; null: shared-secret tokens only"
        ),
    )
    token_jwks_issuer: str | None = Field(
        default=None, description="expected `iss` of JWKS-signed tokens; null: token_issuer"
    )
    token_jwks_audience: str | None = Field(
        default=None,
        description=(
            "expected `aud` of JWKS-signed tokens; null: a token naming an audience is refused"
        ),
    )
    token_jwks_max_age_s: float = Field(
        default=300.0, gt=0, description="refetch the key set this long after a good fetch"
    )
    token_jwks_min_refresh_s: float = Field(
        default=30.0,
        ge=1,
        description=(
            "at most one key set fetch for unknown kids per this long; also the retry interval"
            " after a failed fetch (the last good key set stays in use)"
        ),
    )
    token_jwks_timeout_s: float = Field(
        default=5.0, gt=0, description="bound on fetching the key set"
    )
    heartbeat_interval_s: float = Field(default=5.0, gt=0, description="announced to clients")
    max_frame_bytes: int = Field(default=16 * 1024, description="larger frames get an error")
    hard_max_frame_bytes: int = Field(
        default=1024 * 1024, description="larger frames close the connection (1009)"
    )
    rate_per_s: float = Field(default=20.0, description="frames per second per connection")
    rate_burst: float = Field(default=60.0, description="burst allowance per connection")
    flood_close_after: int = Field(
        default=500,
        ge=1,
        description="frames refused by the rate limit within flood_window_s that close (1008)",
    )
    flood_window_s: float = Field(
        default=10.0, gt=0, description="sliding window over which flood_close_after counts"
    )
    send_queue_frames: int = Field(default=2000, description="pending frames before cut-off")
    send_timeout_s: float = Field(default=10.0, description="a send slower than this cuts off")
    watch_timeout_s: float = Field(default=10.0, description="bound on the snapshot handshake")
    view_stale_after_s: float = Field(
        default=5.0,
        gt=0,
        description=(
            "while proctors watch here, a log partition no RouterBeat named for this long makes"
            " their view stale: they get view_status live=false, then live=true when it returns"
        ),
    )
    produce_timeout_s: float = Field(
        default=15.0, description="bound on recording a connection or presence change in Kafka"
    )
    publish_deadline_s: float = Field(
        default=5.0,
        gt=0,
        description=(
            "every event frame is answered (ack or unavailable) within this long of being read;"
            " after a miss the log counts as stalled and other frames get unavailable at once,"
            " one probe per this interval, until a publish succeeds"
        ),
    )
    recent_publishes: int = Field(
        default=50_000,
        ge=0,
        description=(
            "event publishes this gateway remembers by id, so an identical resend of one still"
            " in flight (or landed lately) is not written to the log twice"
        ),
    )
    id_memory: int = Field(
        default=256,
        ge=64,
        description=(
            "event ids per attempt (or exam, for announcements) whose content the gateway"
            " remembers in Redis to refuse a reused id (id_reused); at least the views' 64"
        ),
    )
    id_memory_ttl_s: int = Field(
        default=24 * 3600, ge=1, description="an attempt's remembered ids expire after this idle"
    )
    connect_limit: int = Field(
        default=10,
        ge=1,
        description="connections per attempt (students) or proctor per connect_window_s",
    )
    connect_window_s: float = Field(
        default=10.0, gt=0, description="fixed window of connect_limit, counted in Redis"
    )
    claim_window_ms: float = Field(
        default=2.0,
        ge=0,
        le=50,
        description=(
            "id checks wait this long to share one Redis script call, and the frames they clear"
            " then share one Kafka produce request: fewer round trips per frame for a little"
            " latency (0: one batch per round trip)"
        ),
    )
    claim_window_above_per_s: float = Field(
        default=500.0,
        ge=0,
        description=(
            "claim_window_ms applies only while this gateway checks more ids a second than"
            " this (judged per second, back below 3/4 of it); 0: always"
        ),
    )
    guard_retry_s: float = Field(
        default=5.0,
        ge=0,
        description="after Redis fails an id or connect check, skip those checks this long",
    )
    handshake_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description=(
            "a TCP connection must complete its HTTP request (the upgrade) within this long;"
            " also the idle limit of a keep-alive HTTP connection"
        ),
    )
    close_grace_s: float = Field(
        default=2.0,
        ge=0,
        description="after deciding to close a WebSocket, abort the socket if still open then",
    )
    produce_linger_ms: int = Field(
        default=0, ge=0, description="how long the log producer waits to fill a request"
    )
    presence_interval_s: float = Field(default=1.0, description="gateway heartbeat period")
    shutdown_grace_s: float = Field(default=5.0, description="drain time on shutdown")
    web_root: Path | None = Field(
        default=Path(__file__).resolve().parents[2] / "web",
        description="static dashboard and demo exam page (served at / and /exam); null: off",
    )


class GatewaySettings(CommonSettings):
    gateway: GatewayOptions = GatewayOptions()
