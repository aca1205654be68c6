"""Settings shared by every service: where the infrastructure is and what the topics are.

Declared once, typed, each with its environment variable (``PROCTOR_`` prefix, ``__`` for
nesting, e.g. ``PROCTOR_KAFKA__BOOTSTRAP``), default and meaning. Service-specific
settings extend ``CommonSettings`` in the service's own ``settings.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.gc_tuning import GcPolicy

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(BaseModel):
    bootstrap: str = Field(
        default="127.0.0.1:19092",
        description=(
            "bootstrap servers, host:port, comma-separated for a cluster (one that answers is"
            " enough to start; list several so a client starts while a broker is down)"
        ),
    )
    events_topic: str = Field(default="exam.events", description="the exam event log")
    presence_topic: str = Field(default="proctor.presence", description="compacted presence")
    heartbeats_topic: str = Field(default="proctor.heartbeats", description="liveness beats")
    deliveries_topic: str = Field(default="proctor.deliveries", description="router output")
    events_partitions: int = Field(default=12, ge=1, description="partitions of the event log")
    events_retention_ms: int = Field(
        default=-1, description="event log retention; -1 keeps the audit record forever"
    )
    heartbeats_partitions: int = Field(
        default=1,
        ge=1,
        description=(
            "partitions of the heartbeat topic: the notifiers share the attempts by them (one"
            " notifier per partition at most, so the most notifiers that can work at once)"
        ),
    )
    deliveries_partitions: int = Field(
        default=32, ge=1, description="one per gateway slot: the most gateways that can run"
    )
    deliveries_retention_ms: int = Field(default=3_600_000, description="deliveries are transient")
    heartbeats_retention_ms: int = Field(default=600_000, description="heartbeats are transient")
    replication_factor: int = Field(
        default=1,
        ge=1,
        description=(
            "replicas per topic partition when topics are created: 1 for one broker, 3 for a"
            ' cluster (docs/operations.md, "Kafka cluster")'
        ),
    )
    min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description=(
            "min.insync.replicas of the topics created: how many replicas (leader included)"
            " must have a record before an acks=all producer (every producer here) is told it"
            " is written; with fewer in sync the broker refuses writes (NotEnoughReplicas) and"
            " the gateways answer unavailable. null: from replication_factor, 1 for 1, else"
            " replication_factor - 1 capped at 2 (2 for the usual 3: one broker may be down)"
        ),
    )
    request_timeout_s: float = Field(default=10.0, description="bound on any single Kafka call")
    # -- security (adapters/kafka_security.py turns these into every client's arguments) ----
    security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT",
        description=(
            "how clients talk to the brokers: PLAINTEXT, SSL (TLS; with a client certificate:"
            " mutual TLS), SASL_PLAINTEXT or SASL_SSL (a user and password, over TLS for SASL_SSL)"
        ),
    )
    sasl_mechanism: SaslMechanism | None = Field(
        default=None,
        description=(
            "SASL mechanism, required with SASL_*: SCRAM-SHA-512 or SCRAM-SHA-256 (MSK, Strimzi),"
            " PLAIN (Confluent Cloud; only over SASL_SSL unless sasl_plain_over_plaintext)"
        ),
    )
    sasl_username: str | None = Field(
        default=None, description="SASL user (Confluent Cloud: the API key), required with SASL_*"
    )
    sasl_password: SecretStr | None = Field(
        default=None,
        description=(
            "SASL password (Confluent Cloud: the API secret); set it or sasl_password_file,"
            " not both. Prefer the file: a mounted Secret, never a ConfigMap value"
        ),
    )
    sasl_password_file: str | None = Field(
        default=None,
        description=(
            "file holding the SASL password (e.g. a mounted Kubernetes Secret), read when each"
            " client is made; one trailing newline is ignored. Set it or sasl_password, not both"
        ),
    )
    sasl_plain_over_plaintext: bool = Field(
        default=False,
        description=(
            "allow SASL PLAIN over SASL_PLAINTEXT, which sends the password unencrypted:"
            " only for a test broker on loopback"
        ),
    )
    ssl_cafile: str | None = Field(
        default=None,
        description=(
            "PEM bundle of the CAs that sign the brokers' certificates (SSL, SASL_SSL);"
            " null: the system's trusted CAs (enough for MSK and Confluent Cloud)"
        ),
    )
    ssl_certfile: str | None = Field(
        default=None,
        description=(
            "PEM client certificate for mutual TLS (Strimzi's tls listener: user.crt); with its"
            " key inside unless ssl_keyfile is set"
        ),
    )
    ssl_keyfile: str | None = Field(
        default=None, description="PEM private key of ssl_certfile (Strimzi: user.key)"
    )
    ssl_key_password_file: str | None = Field(
        default=None, description="file holding the passphrase of an encrypted ssl_keyfile"
    )
    ssl_check_hostname: bool = Field(
        default=True,
        description=(
            "check that a broker's certificate names the host connected to (the certificate"
            " chain is verified either way)"
        ),
    )

    @model_validator(mode="after")
    def _security_consistent(self) -> KafkaSettings:
        if problems := kafka_security_problems(self):
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _replication_consistent(self) -> KafkaSettings:
        if (
            self.min_insync_replicas is not None
            and self.min_insync_replicas > self.replication_factor
        ):
            raise ValueError(
                f"PROCTOR_KAFKA__MIN_INSYNC_REPLICAS={self.min_insync_replicas} is above"
                f" PROCTOR_KAFKA__REPLICATION_FACTOR={self.replication_factor}: no write"
                " could ever be acknowledged"
            )
        return self

    @property
    def topic_min_insync_replicas(self) -> int:
        """The min.insync.replicas topics are created with (``min_insync_replicas`` or the
        default for ``replication_factor``)."""
        if self.min_insync_replicas is not None:
            return self.min_insync_replicas
        return 1 if self.replication_factor == 1 else min(2, self.replication_factor - 1)

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
    password_file: str | None = Field(
        default=None,
        description=(
            "file holding the Redis password (AUTH; e.g. a mounted Kubernetes Secret), read at"
            " start; instead of a password in the URL, not beside one. The user, if any, goes"
            " in the URL (rediss://user@host:6380/0)"
        ),
    )
    ssl_ca_certs: str | None = Field(
        default=None,
        description="PEM bundle of the CAs that sign the server's certificate (rediss:// only)",
    )
    ssl_certfile: str | None = Field(
        default=None, description="PEM client certificate for mutual TLS (rediss:// only)"
    )
    ssl_keyfile: str | None = Field(
        default=None, description="PEM private key of ssl_certfile (rediss:// only)"
    )

    @model_validator(mode="after")
    def _security_consistent(self) -> RedisSettings:
        if problems := redis_security_problems(self):
            raise ValueError("; ".join(problems))
        return self


def kafka_security_problems(kafka: KafkaSettings) -> list[str]:
    """What is inconsistent in the Kafka security settings, each naming its variables.

    Settings that would be silently ignored are refused too: a password set beside a
    PLAINTEXT protocol means the operator expected authentication that would not happen.
    """
    k = "PROCTOR_KAFKA__"
    protocol = kafka.security_protocol
    sasl, tls = protocol.startswith("SASL_"), protocol in ("SSL", "SASL_SSL")
    problems = []
    if sasl:
        if kafka.sasl_mechanism is None:
            problems.append(f"{k}SECURITY_PROTOCOL={protocol} needs {k}SASL_MECHANISM")
        if not kafka.sasl_username:
            problems.append(f"{k}SECURITY_PROTOCOL={protocol} needs {k}SASL_USERNAME")
        if not kafka.sasl_password and not kafka.sasl_password_file:
            problems.append(
                f"{k}SECURITY_PROTOCOL={protocol} needs {k}SASL_PASSWORD_FILE (or {k}SASL_PASSWORD)"
            )
        if kafka.sasl_password and kafka.sasl_password_file:
            problems.append(f"set {k}SASL_PASSWORD or {k}SASL_PASSWORD_FILE, not both")
        if kafka.sasl_mechanism == "PLAIN" and not tls and not kafka.sasl_plain_over_plaintext:
            problems.append(
                f"{k}SASL_MECHANISM=PLAIN over {protocol} sends the password unencrypted:"
                f" use {k}SECURITY_PROTOCOL=SASL_SSL (or, for a test broker on loopback,"
                f" {k}SASL_PLAIN_OVER_PLAINTEXT=true)"
            )
    else:
        unused = [
            name
            for name in ("sasl_mechanism", "sasl_username", "sasl_password", "sasl_password_file")
            if getattr(kafka, name)
        ]
        if unused:
            names = ", ".join(k + name.upper() for name in unused)
            problems.append(
                f"{names} set but {k}SECURITY_PROTOCOL={protocol} does not use SASL:"
                f" set it to SASL_SSL (or SASL_PLAINTEXT)"
            )
    files = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password_file")
    if not tls:
        unused = [name for name in files if getattr(kafka, name)]
        if unused:
            names = ", ".join(k + name.upper() for name in unused)
            problems.append(
                f"{names} set but {k}SECURITY_PROTOCOL={protocol} does not use TLS:"
                f" set it to SSL or SASL_SSL"
            )
    if kafka.ssl_keyfile and not kafka.ssl_certfile:
        problems.append(f"{k}SSL_KEYFILE needs {k}SSL_CERTFILE, the certificate it belongs to")
    if kafka.ssl_key_password_file and not kafka.ssl_certfile:
        problems.append(f"{k}SSL_KEY_PASSWORD_FILE needs {k}SSL_CERTFILE (and its key)")
    return problems


def redis_security_problems(redis: RedisSettings) -> list[str]:
    """What is inconsistent in the Redis security settings, each naming its variables."""
    r = "PROCTOR_REDIS__"
    try:
        url = urlsplit(redis.url)
        password_in_url = url.password is not None
    except ValueError:  # not for us to judge: the Redis client names what is wrong with it
        return []
    problems = []
    if redis.password_file and password_in_url:
        problems.append(f"set a password in {r}URL or {r}PASSWORD_FILE, not both")
    tls_files = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
    unused = [name for name in tls_files if getattr(redis, name)]
    if unused and url.scheme != "rediss":
        names = ", ".join(r + name.upper() for name in unused)
        problems.append(f"{names} set but {r}URL is not rediss:// (TLS)")
    if redis.ssl_keyfile and not redis.ssl_certfile:
        problems.append(f"{r}SSL_KEYFILE needs {r}SSL_CERTFILE, the certificate it belongs to")
    return problems


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
        default=700,
        ge=0,
        description=(
            "net allocations between young garbage collections (Python's default, 700: with"
            " gc_freeze_survivors each collection walks only what is new, a millisecond or two;"
            " without it, larger means fewer full collections; adapters/gc_tuning.py)"
        ),
    )
    gc_freeze_survivors: bool = Field(
        default=True,
        description=(
            "freeze whatever survives a collection, so no collection walks it again: young"
            " collections stay a few ms however many connections a process holds; reference"
            " cycles that die once frozen wait for the sweep (adapters/gc_tuning.py)"
        ),
    )
    gc_sweep_interval_s: float = Field(
        default=3600.0,
        gt=0,
        description=(
            "with gc_freeze_survivors: every this often one full collection reclaims the"
            " reference cycles that died frozen: a stop of the event loop of ~0.1 s per 100,000"
            " objects (0.5 s for a gateway holding 5,000 connections); never 0: cycles that died"
            " frozen would never be reclaimed (turn gc_freeze_survivors off instead)"
        ),
    )

    def gc_policy(self) -> GcPolicy:
        return GcPolicy(
            gen0_threshold=self.gc_gen0_threshold,
            freeze_survivors=self.gc_freeze_survivors,
            sweep_interval_s=self.gc_sweep_interval_s,
        )


class SecretFileError(RuntimeError):
    """A secret named by a ``*_FILE`` setting could not be read (the message names the
    variable and the path, never the content)."""


def read_secret_file(path: str, variable: str) -> str:
    """The secret in ``path`` (a mounted Kubernetes Secret, say), less one trailing newline
    (``echo pw > file`` and most secret tooling add one); refused when unreadable or empty."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SecretFileError(f"{variable}: cannot read {path}: {reason}") from None
    secret = text.removesuffix("\n").removesuffix("\r")
    if not secret:
        raise SecretFileError(f"{variable}: {path} is empty")
    return secret
