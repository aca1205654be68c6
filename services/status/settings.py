"""Settings of the status service (``PROCTOR_STATUS__*``), beside the shared ones."""

from __future__ import annotations

from pydantic import BaseModel, Field

from adapters.settings import CommonSettings


class StatusServiceSettings(BaseModel):
    group_id: str = Field(default="status", description="consumer group on the event log")
    client_id: str = Field(default="proctor-status", description="Kafka client id")
    ops_host: str = Field(
        default="127.0.0.1", description="bind address of /healthz /readyz /metrics"
    )
    ops_port: int = Field(default=9102, ge=0, le=65535, description="ops port; 0 picks a free one")
    poll_timeout_ms: int = Field(
        default=100, ge=1, description="longest getmany wait when the log is quiet"
    )
    fetch_min_bytes: int = Field(
        default=32_768,
        ge=1,
        description=(
            "the broker holds a log fetch until this much has gathered (or the poll timeout):"
            " fewer, fuller fetches; status is off the proctors' latency path"
        ),
    )
    max_batch_records: int = Field(default=2000, ge=1, description="records per getmany batch")
    flush_interval_ms: int = Field(
        default=200,
        ge=0,
        description="DynamoDB writes are coalesced over this window (per item, last state wins)",
    )
    dynamo_max_writes_per_s: float = Field(
        default=100.0,
        ge=0,
        description=(
            "write budget for DynamoDB (0: none); items beyond it keep waiting, oldest first"
            " (submitted attempts first of all), and keep coalescing: an item lags at most about"
            " waiting items / budget, e.g. 100 s for 10,000 busy students at 100/s"
        ),
    )
    flush_max_items: int = Field(
        default=5000, ge=1, description="flush earlier once this many items are waiting"
    )
    dynamo_workers: int = Field(default=8, ge=1, description="DynamoDB requests in flight at once")
    dynamo_transact_items: int = Field(
        default=25,
        ge=1,
        le=100,
        description=(
            "conditional writes per DynamoDB TransactWriteItems: one request per up to this many"
            " items, ~2-3x less DynamoDB CPU and ~6x less client CPU per item than one PutItem"
            " each (measured on DynamoDB Local); on AWS each item then costs 2 write units"
            " instead of 1; 1 = one PutItem per item"
        ),
    )
    dynamo_timeout_s: float = Field(default=5.0, gt=0, description="bound on one DynamoDB call")
    create_table: bool = Field(default=True, description="create the DynamoDB table if missing")
    redis_load_concurrency: int = Field(
        default=32, ge=1, description="parallel Redis reads when loading states missing from cache"
    )
    state_cache_size: int = Field(
        default=200_000, ge=1, description="attempt states kept in memory (LRU); misses read Redis"
    )
    holder_memo_size: int = Field(
        default=200_000,
        ge=1,
        description="known DynamoDB item holders kept to skip hopeless writes",
    )
    retry_initial_s: float = Field(
        default=0.1, gt=0, description="first backoff after a failed write"
    )
    retry_max_s: float = Field(default=5.0, gt=0, description="longest backoff between retries")
    snapshot_check_interval_s: float = Field(
        default=1.0,
        gt=0,
        description=(
            "how often an idle service checks that the Redis snapshot's marker is still there"
            " (every write checks it too); a lost snapshot is re-folded from the log"
        ),
    )
    drain_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="bound on the last flush and commit at shutdown or rebalance",
    )


class Settings(CommonSettings):
    status: StatusServiceSettings = StatusServiceSettings()
