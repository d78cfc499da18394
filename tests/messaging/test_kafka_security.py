"""The Kafka clients' security options, their TLS context on real certificates, and what a refusal says.

No broker: the certificates are made here with `cryptography`, and the TLS handshakes are with a
small asyncio server on the loopback that holds them.
"""

from __future__ import annotations

import ast
import asyncio
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from cryptography.hazmat.primitives.asymmetric import ec

from config import MASK, ConfigError, Settings, describe_settings, load_settings
from errors import SETUP_EXIT_CODE
from messaging import kafka_security
from messaging.kafka_security import (
    KafkaAccessRefused,
    diagnose_bootstrap,
    kafka_client_options,
    kafka_refusal,
    kafka_ssl_context,
    start_kafka_client,
)
from tools.chaos.certificates import authority, cert_pem, key_pem, signed
from tools.chaos.tcp_proxy import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
NO_FILE = Path("/nonexistent/.env")
KEY_PASSWORD = "key pass"


# -- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    ca: Path
    rogue_ca: Path  # a CA that signed nothing here
    server_cert: Path  # for IP 127.0.0.1 only, so `localhost` does not match it
    server_key: Path
    client_cert: Path
    client_key: Path
    client_key_encrypted: Path  # the same key, under KEY_PASSWORD
    other_key: Path  # a key that belongs to no certificate


def make_certificates(directory: Path) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed, and a rogue CA, as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = authority("test CA")
    _, rogue = authority("rogue CA")
    server_key, server_cert = signed(ca, "broker", server=True)
    client_key, client_cert = signed(ca, "client", server=False)
    files = {
        "ca": cert_pem(ca[1]),
        "rogue_ca": cert_pem(rogue),
        "server_cert": cert_pem(server_cert),
        "server_key": key_pem(server_key),
        "client_cert": cert_pem(client_cert),
        "client_key": key_pem(client_key),
        "client_key_encrypted": key_pem(client_key, KEY_PASSWORD),
        "other_key": key_pem(ec.generate_private_key(ec.SECP256R1())),
    }
    for name, content in files.items():
        (directory / f"{name}.pem").write_bytes(content)
    return Certificates(**{name: directory / f"{name}.pem" for name in files})


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def settings_with(**env: str) -> Settings:
    return load_settings(environ=env, env_file=NO_FILE)


def sasl_ssl(certs: Certificates, **env: str) -> Settings:
    return settings_with(**{
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "pw",
        "KAFKA_SSL_CAFILE": str(certs.ca), **env,
    })


# -- the options per protocol -------------------------------------------------------------------


def test_plaintext_adds_nothing_to_aiokafkas_defaults():
    """With the defaults the clients are built exactly as before: PLAINTEXT, no SASL, no TLS."""
    assert kafka_client_options(Settings()) == {"security_protocol": "PLAINTEXT"}


def test_sasl_plaintext_logs_in_without_tls():
    options = kafka_client_options(settings_with(
        KAFKA_SECURITY_PROTOCOL="sasl_plaintext", KAFKA_SASL_MECHANISM="scram-sha-256", KAFKA_SASL_USERNAME="svc", KAFKA_SASL_PASSWORD="pw",
    ))
    assert options == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": "svc", "sasl_plain_password": "pw",
    }


def test_ssl_verifies_the_broker_against_the_ca_file_and_its_host_name(certs):
    options = kafka_client_options(settings_with(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CAFILE=str(certs.ca)))
    assert set(options) == {"security_protocol", "ssl_context"} and options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [_common_name(ca) for ca in context.get_ca_certs()] == ["test CA"]


def test_sasl_ssl_has_both(certs):
    options = kafka_client_options(sasl_ssl(certs, KAFKA_SASL_MECHANISM="PLAIN"))
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "PLAIN"
    assert options["sasl_plain_username"] == "svc" and options["sasl_plain_password"] == "pw"
    assert isinstance(options["ssl_context"], ssl.SSLContext)


def test_the_host_name_check_can_be_turned_off_but_the_certificate_is_still_verified(certs):
    context = kafka_ssl_context(sasl_ssl(certs, KAFKA_SSL_CHECK_HOSTNAME="false"))
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_the_password_comes_from_its_file_and_is_masked_wherever_shown(tmp_path):
    secret = tmp_path / "kafka.password"
    secret.write_text("s3cret pass\n")
    settings = settings_with(
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", KAFKA_SASL_USERNAME="svc", KAFKA_SASL_PASSWORD_FILE=str(secret),
    )
    assert kafka_client_options(settings)["sasl_plain_password"] == "s3cret pass"
    for shown in (repr(settings), describe_settings(settings)):
        assert "s3cret" not in shown
    assert f"KAFKA_SASL_PASSWORD={MASK}  # from KAFKA_SASL_PASSWORD_FILE in the environment" in describe_settings(settings).splitlines()


# -- client certificates and files that will not do ---------------------------------------------


def test_an_encrypted_client_key_opens_with_its_password(certs):
    context = kafka_ssl_context(settings_with(
        KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CAFILE=str(certs.ca), KAFKA_SSL_CERTFILE=str(certs.client_cert),
        KAFKA_SSL_KEYFILE=str(certs.client_key_encrypted), KAFKA_SSL_KEY_PASSWORD=KEY_PASSWORD,
    ))
    assert isinstance(context, ssl.SSLContext)


@pytest.mark.parametrize(("key", "password"), [("client_key_encrypted", "wrong"), ("client_key_encrypted", ""), ("other_key", "")])
def test_a_key_that_cannot_be_used_is_a_config_error_not_a_prompt(certs, key, password):
    """A wrong or missing key password, or a key of another certificate, names KAFKA_SSL_KEYFILE (OpenSSL never prompts)."""
    env = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": str(certs.client_cert), "KAFKA_SSL_KEYFILE": str(getattr(certs, key))}
    if password:
        env["KAFKA_SSL_KEY_PASSWORD"] = password
    with pytest.raises(ConfigError) as caught:
        kafka_ssl_context(settings_with(**env))
    assert caught.value.variable == "KAFKA_SSL_KEYFILE"
    assert caught.value.exit_code == SETUP_EXIT_CODE


def test_a_missing_or_bogus_ca_file_is_named(certs, tmp_path):
    with pytest.raises(ConfigError, match=r"^KAFKA_SSL_CAFILE: cannot read .*/absent\.pem"):
        kafka_client_options(settings_with(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CAFILE=str(tmp_path / "absent.pem")))
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^KAFKA_SSL_CAFILE: .*no usable CA certificate"):
        kafka_client_options(settings_with(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CAFILE=str(bogus)))


# -- real handshakes with a TLS server on the loopback ------------------------------------------


@dataclass
class TlsServer:
    port: int
    client_names: list[str]  # the common name of each client certificate presented


@pytest.fixture
async def tls_server(certs) -> AsyncIterator[TlsServer]:
    """Completes TLS handshakes with the server certificate, then hangs up."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=context)
    yield TlsServer(server.sockets[0].getsockname()[1], [])
    server.close()


@pytest.fixture
def mtls_server(certs) -> Iterator[TlsServer]:
    """Takes only clients that present a certificate the test CA signed, and refuses the others with
    a TLS alert, as a broker with ssl.client.auth=required does. In a thread, with blocking sockets:
    asyncio's server side hangs up on a failed handshake before the alert is out."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    context.load_verify_locations(certs.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    server = TlsServer(listener.getsockname()[1], [])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    server.client_names.append(_common_name(tls.getpeercert()))
                    tls.sendall(b"k")  # after the name is noted, so a client that reads this byte can look
            except (ssl.SSLError, OSError):
                pass  # the refused handshake: OpenSSL has sent the alert already
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server
    stop.set()
    thread.join(timeout=5)
    listener.close()


def _common_name(cert: Any) -> str:
    return next(value for rdn in cert["subject"] for key, value in rdn if key == "commonName")


async def handshake(context: ssl.SSLContext, host: str, port: int) -> None:
    _, writer = await asyncio.open_connection(host, port, ssl=context)
    writer.close()


async def test_the_context_completes_a_handshake_with_a_server_the_ca_signed(certs, tls_server):
    await handshake(kafka_ssl_context(sasl_ssl(certs)), "127.0.0.1", tls_server.port)


async def test_a_certificate_from_another_ca_is_refused(certs, tls_server):
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await handshake(kafka_ssl_context(sasl_ssl(certs, KAFKA_SSL_CAFILE=str(certs.rogue_ca))), "127.0.0.1", tls_server.port)


async def test_the_host_name_is_checked_by_default(certs, tls_server):
    """The certificate names 127.0.0.1 only: `localhost` fails unless the check is turned off."""
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        await handshake(kafka_ssl_context(sasl_ssl(certs)), "localhost", tls_server.port)
    await handshake(kafka_ssl_context(sasl_ssl(certs, KAFKA_SSL_CHECK_HOSTNAME="false")), "localhost", tls_server.port)


async def test_the_client_certificate_is_presented(certs, mtls_server):
    settings = sasl_ssl(certs, KAFKA_SSL_CERTFILE=str(certs.client_cert), KAFKA_SSL_KEYFILE=str(certs.client_key))
    reader, writer = await asyncio.open_connection("127.0.0.1", mtls_server.port, ssl=kafka_ssl_context(settings))
    assert await reader.readexactly(1) == b"k"
    writer.close()
    assert mtls_server.client_names == ["client"]


# -- what a failed bootstrap is put down to -----------------------------------------------------


class FailingToBootstrap:
    """A client whose start() fails as aiokafka's does when no bootstrap server would talk to it."""

    async def start(self) -> None:
        raise KafkaConnectionError("Unable to bootstrap from [...]")


async def test_plaintext_sent_to_a_tls_port_is_a_setting_to_fix(tls_server):
    settings = settings_with(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{tls_server.port}")
    with pytest.raises(KafkaAccessRefused, match=r"answers TLS, yet KAFKA_SECURITY_PROTOCOL=PLAINTEXT.*set KAFKA_SECURITY_PROTOCOL to SSL"):
        await start_kafka_client(FailingToBootstrap(), settings)


async def test_an_untrusted_broker_certificate_names_the_ca_file(certs, tls_server):
    settings = sasl_ssl(certs, KAFKA_SSL_CAFILE=str(certs.rogue_ca), KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{tls_server.port}")
    refusal = await diagnose_bootstrap(settings)
    assert refusal is not None and refusal.exit_code == SETUP_EXIT_CODE
    assert str(refusal).startswith(f"the broker's certificate is not trusted by KAFKA_SSL_CAFILE ({certs.rogue_ca})")


async def test_a_host_name_the_certificate_lacks_points_at_the_check(certs, tls_server):
    refusal = await diagnose_bootstrap(sasl_ssl(certs, KAFKA_BOOTSTRAP_SERVERS=f"localhost:{tls_server.port}"))
    assert refusal is not None and "does not name that host" in str(refusal) and "KAFKA_SSL_CHECK_HOSTNAME=false" in str(refusal)


async def test_a_missing_client_certificate_is_named(certs, mtls_server):
    refusal = await diagnose_bootstrap(sasl_ssl(certs, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{mtls_server.port}"))
    assert refusal is not None and "refused this client's certificate" in str(refusal) and "KAFKA_SSL_CERTFILE" in str(refusal)


async def test_a_broker_that_does_not_answer_stays_an_outage(monkeypatch):
    """A stopped or overloaded broker takes the connection and says nothing: no setting is blamed."""
    monkeypatch.setattr(kafka_security, "CHECK_TIMEOUT_S", 0.2)

    async def say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    try:
        settings = settings_with(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
        assert await diagnose_bootstrap(settings) is None
    finally:
        server.close()


async def test_nothing_listening_stays_an_outage_and_is_retried():
    """A refused connection says nothing about the settings: the original, retriable error goes on."""
    settings = settings_with(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    with pytest.raises(KafkaConnectionError):
        await start_kafka_client(FailingToBootstrap(), settings)


# -- authorization errors -----------------------------------------------------------------------


SERVICE = {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "pw", "KAFKA_GROUP_ID": "grp"}


@pytest.mark.parametrize(
    ("error", "named"),
    [
        (TopicAuthorizationFailedError("output_topic"), "topic output_topic"),
        (TopicAuthorizationFailedError({"b", "a"}), "topic a, b"),
        (GroupAuthorizationFailedError("reader-grp"), "consumer group reader-grp:"),
        (GroupAuthorizationFailedError(), "consumer group grp:"),
        (TransactionalIdAuthorizationFailed("grp-input-3"), "transactional id grp-input-3"),
        (TransactionalIdAuthorizationFailed(), "PREFIXED pattern grp-"),
        (ClusterAuthorizationFailedError(), "KAFKA_SASL_USERNAME"),
    ],
)
def test_a_refused_grant_names_the_principal_and_what_it_was_refused(error, named):
    refusal = kafka_refusal(error, settings_with(**SERVICE))
    assert refusal is not None and refusal.exit_code == SETUP_EXIT_CODE
    assert "User:svc" in str(refusal) and named in str(refusal)


def test_an_error_that_is_no_refusal_is_left_alone():
    assert kafka_refusal(KafkaConnectionError(), Settings()) is None


# -- every client in the project goes through kafka_client_options -------------------------------


def _project_calls(names: set[str]) -> list[tuple[Path, ast.Call]]:
    calls = []
    for path in sorted(REPO_ROOT.rglob("*.py")):
        relative = path.relative_to(REPO_ROOT)
        # tests/stack checks the local stack's own listeners, each with the protocol it speaks.
        if any(part.startswith(".") for part in relative.parts) or relative.parts[:2] == ("tests", "stack"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                if name in names:
                    calls.append((relative, node))
    return calls


def test_every_kafka_client_the_project_builds_takes_the_security_options():
    clients = _project_calls({"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"})
    assert len(clients) > 10
    missing = [
        f"{path}:{call.lineno}" for path, call in clients
        if not any(k.arg is None and isinstance(k.value, ast.Call) and getattr(k.value.func, "id", "") == "kafka_client_options"
                   for k in call.keywords)
    ]
    assert missing == []


def test_every_mysql_connection_the_project_opens_takes_the_tls_context():
    connections = [
        (path, call) for path, call in _project_calls({"connect", "create_pool"})
        if isinstance(call.func, ast.Attribute) and getattr(call.func.value, "id", "") in {"aiomysql", "pymysql"}
    ]
    assert connections
    assert [f"{path}:{call.lineno}" for path, call in connections if not any(k.arg == "ssl" for k in call.keywords)] == []
