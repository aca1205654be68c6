"""Kafka TLS and SASL: the one place settings become the clients' security arguments.

Every Kafka client of the project is built with ``client_kwargs``: the producers and
consumers of ``adapters.kafka_clients``, the admin clients, the router's own consumer and
producer, the audit reader, and (through ``faust_credentials`` in the router's Faust engine,
derived from the same arguments) the Faust app. So a broker that wants TLS, SASL/SCRAM or a
client certificate is configured once, in ``PROCTOR_KAFKA__*`` (``adapters/settings.py``
checks the combination when the settings load; ``docs/operations.md``, "Secured Kafka and
Redis", has MSK, Confluent Cloud and Strimzi).

Files (the CA bundle, the client certificate and key, the password files) are read here, when
a client is made, i.e. at start; an unreadable one raises ``KafkaSecurityError`` naming the
variable, never a secret.
"""

from __future__ import annotations

import ssl
from typing import TypedDict

from adapters.settings import KafkaSettings, SecretFileError, read_secret_file

_K = "PROCTOR_KAFKA__"


class KafkaSecurityError(RuntimeError):
    """The security settings name a file that cannot be used (message: variable and path)."""


class ClientSecurity(TypedDict, total=False):
    """The security keyword arguments of aiokafka's producer, consumer and admin client."""

    security_protocol: str
    ssl_context: ssl.SSLContext
    sasl_mechanism: str
    sasl_plain_username: str
    sasl_plain_password: str


def uses_tls(kafka: KafkaSettings) -> bool:
    return kafka.security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(kafka: KafkaSettings) -> bool:
    return kafka.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def client_kwargs(kafka: KafkaSettings) -> ClientSecurity:
    """``security_protocol`` and, as it needs them, ``ssl_context`` and the ``sasl_*``
    arguments, for ``AIOKafkaProducer(**client_kwargs(kafka), ...)`` and its siblings."""
    security = ClientSecurity(security_protocol=kafka.security_protocol)
    if uses_tls(kafka):
        security["ssl_context"] = ssl_context(kafka)
    if uses_sasl(kafka):
        # Checked at settings load, again here for settings copied without validation.
        if kafka.sasl_mechanism is None or not kafka.sasl_username:
            raise KafkaSecurityError(
                f"{_K}SECURITY_PROTOCOL={kafka.security_protocol} needs {_K}SASL_MECHANISM"
                f" and {_K}SASL_USERNAME"
            )
        security["sasl_mechanism"] = kafka.sasl_mechanism
        security["sasl_plain_username"] = kafka.sasl_username
        security["sasl_plain_password"] = sasl_password(kafka)
    return security


def sasl_password(kafka: KafkaSettings) -> str:
    """The SASL password: read from ``sasl_password_file`` when set (at each call, so a client
    made after a Secret was rotated uses the new one), else ``sasl_password``."""
    if kafka.sasl_password_file:
        try:
            return read_secret_file(kafka.sasl_password_file, f"{_K}SASL_PASSWORD_FILE")
        except SecretFileError as exc:
            raise KafkaSecurityError(str(exc)) from None
    if kafka.sasl_password:
        return kafka.sasl_password.get_secret_value()
    raise KafkaSecurityError(f"{_K}SASL_PASSWORD_FILE (or {_K}SASL_PASSWORD) is not set")


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """A client TLS context: the brokers' certificates verified against ``ssl_cafile`` (else
    the system's CAs), their host names checked unless ``ssl_check_hostname`` is false, TLS
    1.2 at least, and the client certificate loaded for mutual TLS when one is set."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=kafka.ssl_cafile)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaSecurityError(_unusable("SSL_CAFILE", kafka.ssl_cafile, exc)) from None
    context.check_hostname = kafka.ssl_check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if kafka.ssl_certfile:
        # Never None: OpenSSL would then prompt on the terminal for an encrypted key's
        # passphrase; an empty one makes such a key fail to load instead.
        password = ""
        if kafka.ssl_key_password_file:
            try:
                password = read_secret_file(
                    kafka.ssl_key_password_file, f"{_K}SSL_KEY_PASSWORD_FILE"
                )
            except SecretFileError as exc:
                raise KafkaSecurityError(str(exc)) from None
        try:
            context.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile or None, lambda: password)
        except (OSError, ssl.SSLError) as exc:
            files = f"{kafka.ssl_certfile}" + (
                f", {kafka.ssl_keyfile}" if kafka.ssl_keyfile else ""
            )
            raise KafkaSecurityError(_unusable("SSL_CERTFILE/SSL_KEYFILE", files, exc)) from None
    return context


def _unusable(variable: str, path: str | None, exc: Exception) -> str:
    # OSError's strerror, or the SSL library's reason: never the file's content.
    reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
    return f"{_K}{variable}: cannot use {path}: {reason}"
