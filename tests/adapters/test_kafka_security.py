"""Kafka security settings: which combinations load, and the client arguments they become.

No broker here: the secured broker itself is exercised by tests/e2e/test_secured_stack.py.
"""

from __future__ import annotations

import ast
import datetime
import io
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from adapters.cli import print_settings
from adapters.kafka_clients import durable_producer, group_consumer, reader
from adapters.kafka_security import KafkaSecurityError, client_kwargs, ssl_context
from adapters.settings import CommonSettings, KafkaSettings
from adapters.settings_fields import MASK
from services.router.faust_engine import faust_credentials

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "do-not-print-this-sasl-password"


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    encrypted_key: Path
    key_password_file: Path
    other_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a client certificate signed by it, its key plain and encrypted."""
    out = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test CA"))
        .issuer_name(_name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("proctor"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    pki = Pki(
        ca=out / "ca.crt",
        cert=out / "client.crt",
        key=out / "client.key",
        encrypted_key=out / "client.enc.key",
        key_password_file=out / "key-password",
        other_key=out / "other.key",
    )
    pki.ca.write_bytes(ca.public_bytes(pem))
    pki.cert.write_bytes(cert.public_bytes(pem))
    pki.key.write_bytes(key.private_bytes(pem, pkcs8, serialization.NoEncryption()))
    pki.encrypted_key.write_bytes(
        key.private_bytes(pem, pkcs8, serialization.BestAvailableEncryption(b"key-passphrase"))
    )
    pki.key_password_file.write_text("key-passphrase\n")
    other = ec.generate_private_key(ec.SECP256R1())
    pki.other_key.write_bytes(other.private_bytes(pem, pkcs8, serialization.NoEncryption()))
    return pki


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "sasl-password"
    path.write_text(PASSWORD + "\n")
    return path


def scram(password_file: Path, **fields: Any) -> KafkaSettings:
    return KafkaSettings(
        **{
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "proctor",
            "sasl_password_file": str(password_file),
            **fields,
        }
    )


# -- validation at settings load ------------------------------------------------------------


def test_the_default_is_plaintext_with_nothing_else() -> None:
    assert client_kwargs(KafkaSettings()) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        (
            {"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": "p"},
            "SECURITY_PROTOCOL=SASL_SSL needs PROCTOR_KAFKA__SASL_MECHANISM",
        ),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-256",
                "sasl_password": "p",
            },
            "needs PROCTOR_KAFKA__SASL_USERNAME",
        ),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-256",
                "sasl_username": "u",
            },
            "needs PROCTOR_KAFKA__SASL_PASSWORD_FILE",
        ),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-256",
                "sasl_username": "u",
                "sasl_password": "p",
                "sasl_password_file": "/run/secrets/kafka",
            },
            "PROCTOR_KAFKA__SASL_PASSWORD or PROCTOR_KAFKA__SASL_PASSWORD_FILE, not both",
        ),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "u",
                "sasl_password": "p",
            },
            "PLAIN over SASL_PLAINTEXT sends the password unencrypted",
        ),
        (
            {"sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "u"},
            "SASL_USERNAME set but PROCTOR_KAFKA__SECURITY_PROTOCOL=PLAINTEXT does not use SASL",
        ),
        (
            {"security_protocol": "SASL_PLAINTEXT", "ssl_cafile": "/ca.pem"},
            "PROCTOR_KAFKA__SSL_CAFILE set but PROCTOR_KAFKA__SECURITY_PROTOCOL=SASL_PLAINTEXT",
        ),
        (
            {"security_protocol": "SSL", "ssl_keyfile": "/client.key"},
            "PROCTOR_KAFKA__SSL_KEYFILE needs PROCTOR_KAFKA__SSL_CERTFILE",
        ),
        (
            {"security_protocol": "SSL", "ssl_key_password_file": "/pw"},
            "PROCTOR_KAFKA__SSL_KEY_PASSWORD_FILE needs PROCTOR_KAFKA__SSL_CERTFILE",
        ),
        ({"security_protocol": "TLS"}, "Input should be"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "Input should be"),
    ],
)
def test_inconsistent_combinations_are_refused_naming_the_variables(
    fields: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        KafkaSettings(**fields)
    assert complaint in str(refused.value)
    assert "do-not-print" not in str(refused.value)


def test_plain_over_plaintext_only_when_explicitly_allowed() -> None:
    allowed = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password="p",
        sasl_plain_over_plaintext=True,
    )
    security = client_kwargs(allowed)
    assert security == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "u",
        "sasl_plain_password": "p",
    }


def test_empty_values_count_as_unset() -> None:
    # Templated deployments set every variable, some empty: that is not "set but unused".
    settings = KafkaSettings(sasl_username="", ssl_cafile="")
    assert client_kwargs(settings) == {"security_protocol": "PLAINTEXT"}


def test_the_environment_configures_it(
    monkeypatch: pytest.MonkeyPatch, password_file: Path, pki: Pki
) -> None:
    for name, value in {
        "SECURITY_PROTOCOL": "SASL_SSL",
        "SASL_MECHANISM": "SCRAM-SHA-256",
        "SASL_USERNAME": "proctor",
        "SASL_PASSWORD_FILE": str(password_file),
        "SSL_CAFILE": str(pki.ca),
        "SSL_CHECK_HOSTNAME": "false",
    }.items():
        monkeypatch.setenv(f"PROCTOR_KAFKA__{name}", value)
    kafka = CommonSettings().kafka
    security = client_kwargs(kafka)
    assert security["sasl_mechanism"] == "SCRAM-SHA-256"
    assert security["sasl_plain_password"] == PASSWORD
    assert security["ssl_context"].check_hostname is False


def test_print_settings_masks_the_password_and_keeps_the_rest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="api-key",
        sasl_password=PASSWORD,
    )
    out = io.StringIO()
    print_settings(CommonSettings(kafka=kafka), out)
    lines = out.getvalue().splitlines()
    assert f"PROCTOR_KAFKA__SASL_PASSWORD={MASK}" in lines
    assert f"PROCTOR_KAFKA__SASL_PASSWORD_FILE={MASK}" in lines
    assert "PROCTOR_KAFKA__SASL_USERNAME=api-key" in lines
    assert "PROCTOR_KAFKA__SECURITY_PROTOCOL=SASL_SSL" in lines
    assert PASSWORD not in out.getvalue() + repr(kafka) + str(kafka)


# -- the arguments ---------------------------------------------------------------------------


def test_scram_over_tls_reads_the_password_file_and_verifies_the_broker(
    password_file: Path, pki: Pki
) -> None:
    security = client_kwargs(scram(password_file, ssl_cafile=str(pki.ca)))
    assert security["security_protocol"] == "SASL_SSL"
    assert security["sasl_mechanism"] == "SCRAM-SHA-512"
    assert security["sasl_plain_username"] == "proctor"
    assert security["sasl_plain_password"] == PASSWORD  # the trailing newline dropped
    context = security["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ["'test CA'" in str(ca["subject"]) for ca in context.get_ca_certs()] == [True]


def test_without_a_ca_file_the_system_cas_are_trusted(password_file: Path) -> None:
    context = client_kwargs(scram(password_file))["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] == len(ssl.create_default_context().get_ca_certs())


def test_host_name_check_can_be_turned_off_but_never_verification(password_file: Path) -> None:
    context = ssl_context(scram(password_file, ssl_check_hostname=False))
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_the_password_file_is_read_again_for_each_client(password_file: Path) -> None:
    kafka = scram(password_file)
    assert client_kwargs(kafka)["sasl_plain_password"] == PASSWORD
    password_file.write_text("rotated\r\n")
    assert client_kwargs(kafka)["sasl_plain_password"] == "rotated"


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_a_missing_or_empty_password_file_is_a_clear_error(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "absent"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KafkaSecurityError, match="PROCTOR_KAFKA__SASL_PASSWORD_FILE") as failed:
        client_kwargs(scram(path))
    assert str(path) in str(failed.value)


def test_mutual_tls_loads_the_client_certificate(pki: Pki) -> None:
    kafka = KafkaSettings(
        security_protocol="SSL",
        ssl_cafile=str(pki.ca),
        ssl_certfile=str(pki.cert),
        ssl_keyfile=str(pki.key),
    )
    security = client_kwargs(kafka)
    assert set(security) == {"security_protocol", "ssl_context"}
    assert security["security_protocol"] == "SSL"


def test_an_encrypted_key_is_opened_with_its_password_file(pki: Pki) -> None:
    kafka = KafkaSettings(
        security_protocol="SSL",
        ssl_certfile=str(pki.cert),
        ssl_keyfile=str(pki.encrypted_key),
        ssl_key_password_file=str(pki.key_password_file),
    )
    assert client_kwargs(kafka)["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(KafkaSecurityError, match="SSL_CERTFILE/SSL_KEYFILE"):
        # Without its passphrase the key fails to load: no prompt on the terminal.
        client_kwargs(kafka.model_copy(update={"ssl_key_password_file": None}))
    with pytest.raises(KafkaSecurityError, match="PROCTOR_KAFKA__SSL_KEY_PASSWORD_FILE"):
        client_kwargs(kafka.model_copy(update={"ssl_key_password_file": "/nonexistent"}))


@pytest.mark.parametrize(
    ("fields", "variable"),
    [
        ({"ssl_cafile": "/nonexistent/ca.pem"}, "PROCTOR_KAFKA__SSL_CAFILE"),
        ({"ssl_certfile": "/nonexistent/c.pem"}, "PROCTOR_KAFKA__SSL_CERTFILE/SSL_KEYFILE"),
    ],
)
def test_unusable_files_name_their_variable(fields: dict[str, str], variable: str) -> None:
    with pytest.raises(KafkaSecurityError, match=variable):
        client_kwargs(KafkaSettings(security_protocol="SSL", **fields))


def test_a_key_that_does_not_match_the_certificate_is_refused(pki: Pki) -> None:
    kafka = KafkaSettings(
        security_protocol="SSL", ssl_certfile=str(pki.cert), ssl_keyfile=str(pki.other_key)
    )
    with pytest.raises(KafkaSecurityError, match="SSL_CERTFILE/SSL_KEYFILE"):
        client_kwargs(kafka)


# -- every client gets them ------------------------------------------------------------------


async def test_the_project_clients_carry_the_security(password_file: Path, pki: Pki) -> None:
    kafka = scram(password_file, ssl_cafile=str(pki.ca))
    producer = durable_producer(kafka, client_id="t")
    consumers = [
        group_consumer(kafka, "t", group_id="g", client_id="t"),
        reader(kafka, client_id="t"),
    ]
    try:
        clients = [producer.client, *(c._client for c in consumers)]
        for client in clients:
            assert client._security_protocol == "SASL_SSL"
            assert client._sasl_mechanism == "SCRAM-SHA-512"
            assert client._sasl_plain_username == "proctor"
            assert client._sasl_plain_password == PASSWORD
            assert isinstance(client._ssl_context, ssl.SSLContext)
        assert isinstance(producer, AIOKafkaProducer)
        assert all(isinstance(c, AIOKafkaConsumer) for c in consumers)
    finally:
        await producer.stop()
        for consumer in consumers:
            await consumer.stop()


def _faust_view(kafka: KafkaSettings) -> dict[str, Any]:
    auth = dict(credentials_to_aiokafka_auth(faust_credentials(kafka)))
    return {k: v for k, v in auth.items() if k != "ssl_context" and v is not None} | {
        "tls": isinstance(auth.get("ssl_context"), ssl.SSLContext)
    }


def _ours(kafka: KafkaSettings) -> dict[str, Any]:
    security: dict[str, Any] = dict(client_kwargs(kafka))
    return {k: v for k, v in security.items() if k != "ssl_context"} | {
        "tls": "ssl_context" in security
    }


def test_faust_gets_the_same_security_as_every_other_client(password_file: Path, pki: Pki) -> None:
    cases = [
        KafkaSettings(),
        scram(password_file),
        scram(password_file, security_protocol="SASL_PLAINTEXT"),
        KafkaSettings(
            security_protocol="SSL", ssl_certfile=str(pki.cert), ssl_keyfile=str(pki.key)
        ),
    ]
    assert faust_credentials(cases[0]) is None
    assert isinstance(faust_credentials(cases[1]), faust.SASLCredentials)
    assert isinstance(faust_credentials(cases[3]), faust.SSLCredentials)
    for kafka in cases:
        assert _faust_view(kafka) == _ours(kafka), kafka.security_protocol


# -- and no client is made elsewhere without them ---------------------------------------------

KAFKA_CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "KafkaAdminClient"}
SOURCES = ("adapters", "services", "audit", "deploy", "simulator")


def _called_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _spreads_client_kwargs(node: ast.Call) -> bool:
    return any(
        kw.arg is None
        and isinstance(kw.value, ast.Call)
        and _called_name(kw.value) == "client_kwargs"
        for kw in node.keywords
    )


def test_every_kafka_client_of_the_project_is_built_with_client_kwargs() -> None:
    found, bare = 0, []
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and _called_name(node) in KAFKA_CLIENTS:
                    found += 1
                    if not _spreads_client_kwargs(node):
                        bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                if isinstance(node, ast.Call) and _called_name(node) == "App":
                    keywords = {kw.arg for kw in node.keywords}
                    if "broker" in keywords and "broker_credentials" not in keywords:
                        bare.append(f"{path.relative_to(ROOT)}:{node.lineno} (faust.App)")
    assert found >= 7
    assert not bare, f"Kafka clients without adapters.kafka_security.client_kwargs: {bare}"
