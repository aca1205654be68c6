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
    port: int = Field(default=8080, description="listen port (WebSocket, health, metrics)")
    tls_cert: str | None = Field(default=None, description="PEM certificate: serve wss")
    tls_key: str | None = Field(default=None, description="PEM private key for tls_cert")
    token_secret: str = Field(default="dev-only-secret-change-me-0123456789abcdef",
        description="HS256 key shared with the LMS (at least 32 bytes)",)
    token_issuer: str = Field(default="lms", description="expected `iss` claim")
    heartbeat_interval_s: float = Field(default=5.0, gt=0, description="announced to clients")
    max_frame_bytes: int = Field(default=16 * 1024, description="larger frames get an error")
    hard_max_frame_bytes: int = Field(
        default=1024 * 1024, description="larger frames close the connection (1009)"
    )
    rate_per_s: float = Field(default=20.0, description="frames per second per connection")
    rate_burst: float = Field(default=60.0, description="burst allowance per connection")
    flood_close_after: int = Field(
        default=500, description="frames dropped in a row before closing the connection (1008)"
    )
    send_queue_frames: int = Field(default=2000, description="pending frames before cut-off")
    send_timeout_s: float = Field(default=10.0, description="a send slower than this cuts off")
    watch_timeout_s: float = Field(default=10.0, description="bound on the snapshot handshake")
    produce_timeout_s: float = Field(default=15.0, description="bound on a produce ack")
    produce_linger_ms: int = Field(
        default=0, ge=0, description="how long the log producer waits to fill a request"
    )
    presence_interval_s: float = Field(default=1.0, description="gateway heartbeat period")
    shutdown_grace_s: float = Field(default=5.0, description="drain time on shutdown")
    web_root: Path | None = Field(
        default=Path(__file__).resolve().parents[2] / "web",
        description="static dashboard and demo exam page (served at / and /exam); None: off",
    )


class GatewaySettings(CommonSettings):
    gateway: GatewayOptions = GatewayOptions()
