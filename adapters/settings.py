"""Settings shared by every service: where the infrastructure is and what the topics are.

Declared once, typed, each with its environment variable (``PROCTOR_`` prefix, ``__`` for
nesting, e.g. ``PROCTOR_KAFKA__BOOTSTRAP``), default and meaning. Service-specific
settings extend ``CommonSettings`` in the service's own ``settings.py``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    bootstrap: str = Field(default="127.0.0.1:19092", description="bootstrap servers")
    events_topic: str = Field(default="exam.events", description="the exam event log")
    presence_topic: str = Field(default="proctor.presence", description="compacted presence")
    heartbeats_topic: str = Field(default="proctor.heartbeats", description="liveness beats")
    deliveries_topic: str = Field(default="proctor.deliveries", description="router output")
    events_partitions: int = Field(default=12, ge=1, description="partitions of the event log")
    events_retention_ms: int = Field(
        default=-1, description="event log retention; -1 keeps the audit record forever"
    )
    deliveries_partitions: int = Field(
        default=32, ge=1, description="one per gateway slot: the most gateways that can run"
    )
    deliveries_retention_ms: int = Field(default=3_600_000, description="deliveries are transient")
    heartbeats_retention_ms: int = Field(default=600_000, description="heartbeats are transient")
    replication_factor: int = Field(
        default=1, ge=1, description="replicas per topic partition when topics are created"
    )
    request_timeout_s: float = Field(default=10.0, description="bound on any single Kafka call")

    @classmethod
    def for_run(cls, run: str, **fields: Any) -> KafkaSettings:
        """Topics of their own for one test, benchmark or isolated run: ``<run>.events`` etc."""
        names = {
            f"{topic}_topic": f"{run}.{topic}"
            for topic in ("events", "presence", "heartbeats", "deliveries")
        }
        return cls(**(names | fields))


class RedisSettings(BaseModel):
    url: str = Field(default="redis://127.0.0.1:16379/0", description="hot, rebuildable state")
    timeout_s: float = Field(default=2.0, description="bound on any single Redis call")
    key_prefix: str = Field(default="", description="namespace for every key (tests, tenants)")


class DynamoSettings(BaseModel):
    endpoint: str | None = Field(
        default="http://127.0.0.1:18000", description="DynamoDB endpoint; unset for AWS"
    )
    region: str = Field(default="us-east-1", description="AWS region (any for DynamoDB Local)")
    table: str = Field(default="proctor_first_attempts", description="first-attempt state table")
    access_key_id: str = Field(default="local", description="ignored by DynamoDB Local")
    secret_access_key: str = Field(default="local", description="ignored by DynamoDB Local")


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROCTOR_",
        env_nested_delimiter="__",
        env_parse_none_str="null",
        extra="ignore",
    )

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    dynamo: DynamoSettings = DynamoSettings()
    log_level: str = Field(
        default="INFO",
        description="least level logged (DEBUG, INFO, WARNING, ERROR), libraries' records included",
    )
    log_json: bool = Field(
        default=False,
        description=(
            "one JSON object per line on stderr, the libraries' records included, each with the"
            " service's name (for production collectors); else readable key=value lines"
        ),
    )
    gc_gen0_threshold: int = Field(
        default=50_000,
        ge=0,
        description=(
            "allocations between young garbage collections (Python's default: 700); larger"
            " means far fewer full collections, each a stop of the event loop"
            " (adapters/gc_tuning.py)"
        ),
    )
