"""How every Kafka client of the project connects, and what Kafka refusing it means.

`kafka_client_options(settings)` is splatted into each AIOKafkaProducer, AIOKafkaConsumer and
AIOKafkaAdminClient, so one set of settings (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*)
secures them all. A refusal (wrong password, untrusted certificate, the wrong protocol for the
port, a missing ACL) is a set-up to fix, not an outage: `KafkaAccessRefused` says which one in
one message, and the programs stop on it with exit code 2 instead of retrying for ever.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    RequestTimedOutError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest

from config import SASL_PROTOCOLS, TLS_PROTOCOLS, ConfigError, Settings
from errors import SetupError

log = logging.getLogger(__name__)

# Kafka refusing a client's grants (ACLs): one list, read by service/failures.py too.
KAFKA_AUTHORIZATION_ERRORS: tuple[type[KafkaError], ...] = (
    TopicAuthorizationFailedError, GroupAuthorizationFailedError, TransactionalIdAuthorizationFailed, ClusterAuthorizationFailedError,
)
# Kafka refusing who the client says it is, or how it says it.
KAFKA_AUTHENTICATION_ERRORS: tuple[type[KafkaError], ...] = (
    SaslAuthenticationFailed, AuthenticationFailedError, UnsupportedSaslMechanismError, IllegalSaslStateError,
)
# How long the check after a failed bootstrap waits for each answer; it runs only then.
CHECK_TIMEOUT_S = 5.0
# OpenSSL's verify code for a certificate that does not name the host connected to.
X509_V_ERR_HOSTNAME_MISMATCH = 62


class KafkaAccessRefused(SetupError):
    """Kafka refused the client's credentials, certificate, protocol or grants: a setting or an ACL to fix."""


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """The security options of an aiokafka client, for KAFKA_SECURITY_PROTOCOL and the settings it uses."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in SASL_PROTOCOLS:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    if protocol in TLS_PROTOCOLS:
        options["ssl_context"] = kafka_ssl_context(settings)
    return options


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext:
    """A client context that trusts KAFKA_SSL_CAFILE (the system's CAs when empty), checks the broker's
    host name unless KAFKA_SSL_CHECK_HOSTNAME is false, and presents KAFKA_SSL_CERTFILE when set.

    A file that is missing or is not what it should be raises ConfigError naming its setting.
    """
    cafile = _readable("KAFKA_SSL_CAFILE", settings.kafka_ssl_cafile)
    certfile = _readable("KAFKA_SSL_CERTFILE", settings.kafka_ssl_certfile)
    keyfile = _readable("KAFKA_SSL_KEYFILE", settings.kafka_ssl_keyfile)
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=cafile)
    except ssl.SSLError as exc:
        raise ConfigError("KAFKA_SSL_CAFILE", f"{cafile} holds no usable CA certificate ({exc.reason or exc})") from None
    if certfile is not None:
        # A callable, even for no password: given none, OpenSSL would prompt on the terminal for an
        # encrypted key, and a service has nobody there to answer.
        key_password = settings.kafka_ssl_key_password
        try:
            context.load_cert_chain(certfile, keyfile, password=lambda: key_password)
        except ssl.SSLError as exc:
            raise ConfigError(
                "KAFKA_SSL_KEYFILE",
                f"cannot be loaded with KAFKA_SSL_CERTFILE ({exc.reason or exc}): check that the key belongs to the"
                " certificate and, for an encrypted key, KAFKA_SSL_KEY_PASSWORD",
            ) from None
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def _readable(variable: str, path: str) -> str | None:
    if not path:
        return None
    try:
        with Path(path).open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(variable, f"cannot read {path}: {exc.strerror or exc}") from None
    return path


def principal(settings: Settings) -> str:
    """Who Kafka's ACLs see, as the settings tell it, for messages."""
    if settings.kafka_security_protocol in SASL_PROTOCOLS:
        return f"User:{settings.kafka_sasl_username}"
    if settings.kafka_security_protocol in TLS_PROTOCOLS and settings.kafka_ssl_certfile:
        return "the principal of KAFKA_SSL_CERTFILE"
    return "User:ANONYMOUS (no KAFKA_SASL_USERNAME)"


def refused_names(exc: BaseException) -> list[str]:
    """The topics, group or transactional id an authorization error carries, as aiokafka raises them."""
    names: list[str] = []
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, str):
            names.append(arg)
        elif isinstance(arg, Iterable):
            names.extend(sorted(str(name) for name in arg))
    return names


def authorization_summary(exc: BaseException) -> str | None:
    """`no access to topic x` for an authorization error, naming what it was refused; None for any other error."""
    names = ", ".join(refused_names(exc))
    if isinstance(exc, TopicAuthorizationFailedError):
        return f"no access to topic {names}" if names else "no access to a topic"
    if isinstance(exc, GroupAuthorizationFailedError):
        return f"no access to consumer group {names}" if names else "no access to a consumer group"
    if isinstance(exc, TransactionalIdAuthorizationFailed):
        return f"no access to transactional id {names}" if names else "no access to a transactional id"
    if isinstance(exc, ClusterAuthorizationFailedError):
        return "no access to a cluster operation"
    return None


def kafka_refusal(exc: BaseException, settings: Settings) -> KafkaAccessRefused | None:
    """The error a program stops with for `exc`, when `exc` is Kafka refusing a grant; None for any other error."""
    if isinstance(exc, KafkaAccessRefused):
        return exc
    who = principal(settings)
    names = ", ".join(refused_names(exc))
    if isinstance(exc, TopicAuthorizationFailedError):
        topics = names or "a topic this program uses"
        text = f"Kafka denied {who} access to topic {topics}: grant it READ to consume, WRITE to produce, CREATE to create it"
    elif isinstance(exc, GroupAuthorizationFailedError):
        group = names or settings.kafka_group_id
        setting = "PURCHASES_GROUP_ID" if group == settings.purchases_group_id else "KAFKA_GROUP_ID"
        text = f"Kafka denied {who} access to consumer group {group}: grant it READ and DESCRIBE on that group ({setting})"
    elif isinstance(exc, TransactionalIdAuthorizationFailed):
        txn = names or f"{settings.kafka_group_id}-…"
        text = (
            f"Kafka denied {who} the transactional id {txn}: grant it WRITE and DESCRIBE on transactional ids with the"
            f" PREFIXED pattern {settings.kafka_group_id}- (KAFKA_GROUP_ID), or set PROCESSING_GUARANTEE=at_least_once"
        )
    elif isinstance(exc, ClusterAuthorizationFailedError):
        text = (
            f"Kafka denied {who} a cluster operation: an idempotent or transactional producer needs WRITE on the topics"
            " it writes (or IDEMPOTENT_WRITE on the cluster), creating topics needs CREATE; check the ACLs of KAFKA_SASL_USERNAME"
        )
    else:
        return None
    return KafkaAccessRefused(text)


class StartableClient(Protocol):
    async def start(self) -> None: ...


async def start_kafka_client(client: StartableClient, settings: Settings) -> None:
    """`client.start()`; when it cannot bootstrap because of a setting, KafkaAccessRefused saying which.

    aiokafka logs why each bootstrap server failed and raises only "Unable to bootstrap", which
    reads as an outage and would be retried for ever. So after that failure, and only then, one
    connection of its own to each server finds the cause.
    """
    try:
        await client.start()
    except KafkaConnectionError:
        refusal = await diagnose_bootstrap(settings)
        if refusal is not None:
            raise refusal from None
        raise


async def diagnose_bootstrap(settings: Settings) -> KafkaAccessRefused | None:
    """Connect to each bootstrap server as the clients do; the first refusal a setting explains, or None
    when every failure looks like an outage (refused, reset, no answer) that may pass."""
    for server in settings.kafka_bootstrap_servers.split(","):
        host, _, port = server.rpartition(":")
        refusal = await _diagnose_server(settings, host, int(port))
        if refusal is not None:
            return refusal
    return None


async def _diagnose_server(settings: Settings, host: str, port: int) -> KafkaAccessRefused | None:
    protocol, where = settings.kafka_security_protocol, f"Kafka at {host}:{port}"
    try:
        conn = await create_conn(
            host, port, client_id="connection-check", request_timeout_ms=int(CHECK_TIMEOUT_S * 1000), **kafka_client_options(settings)
        )
    except (SaslAuthenticationFailed, AuthenticationFailedError):
        return KafkaAccessRefused(
            f"{where} refused the credentials of {settings.kafka_sasl_username} ({settings.kafka_sasl_mechanism}):"
            " check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM"
        )
    except UnsupportedSaslMechanismError:
        return KafkaAccessRefused(
            f"{where} does not offer KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism}: set it to one the broker's"
            " sasl.enabled.mechanisms lists"
        )
    except IllegalSaslStateError:
        return KafkaAccessRefused(
            f"{where} takes no SASL login on that port, yet KAFKA_SECURITY_PROTOCOL={protocol}:"
            " set KAFKA_SECURITY_PROTOCOL to PLAINTEXT or SSL, or connect to the broker's SASL listener"
        )
    except ssl.SSLCertVerificationError as exc:
        return KafkaAccessRefused(_untrusted_certificate(settings, where, exc))
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
        # The connection dropped during the handshake: a broker going down, or no TLS on that port.
        return await _protocol_mismatch(settings, host, port, exc)
    except ssl.SSLError as exc:
        return KafkaAccessRefused(
            f"TLS with {where} failed ({exc.reason or exc}): check KAFKA_SECURITY_PROTOCOL={protocol} is the listener's protocol,"
            " and that the broker accepts KAFKA_SSL_CERTFILE if it asks for a client certificate"
        )
    except (OSError, TimeoutError, KafkaError) as exc:
        return await _protocol_mismatch(settings, host, port, exc)
    try:
        await asyncio.wait_for(conn.send(MetadataRequest([])), CHECK_TIMEOUT_S)
    except (OSError, TimeoutError, KafkaError) as exc:
        if protocol not in SASL_PROTOCOLS and isinstance(exc, (KafkaConnectionError, ConnectionError)):
            # The broker answered the version request, which SASL listeners take before the login,
            # and dropped the connection at the first real one.
            return KafkaAccessRefused(
                f"{where} closed the connection at the first request after KAFKA_SECURITY_PROTOCOL={protocol}: a listener"
                " that expects a SASL login does that; set KAFKA_SECURITY_PROTOCOL to SASL_PLAINTEXT or SASL_SSL"
            )
        return None
    finally:
        conn.close()
    return None


def _untrusted_certificate(settings: Settings, where: str, exc: ssl.SSLCertVerificationError) -> str:
    if exc.verify_code == X509_V_ERR_HOSTNAME_MISMATCH:
        return (
            f"the certificate of {where} does not name that host ({exc.verify_message}): connect by a name the"
            " certificate carries (KAFKA_BOOTSTRAP_SERVERS), or set KAFKA_SSL_CHECK_HOSTNAME=false"
        )
    trusted = settings.kafka_ssl_cafile or "empty: the system's CA certificates"
    return (
        f"the broker's certificate is not trusted by KAFKA_SSL_CAFILE ({trusted}): {exc.verify_message} at {where};"
        " set KAFKA_SSL_CAFILE to the certificate of the CA that signed the broker's"
    )


async def _protocol_mismatch(settings: Settings, host: str, port: int, failure: BaseException) -> KafkaAccessRefused | None:
    """After a connection that failed the way an outage does: a refusal when the port speaks the other
    protocol (TLS where plaintext was sent, or the reverse), else None: the outage it looks like."""
    protocol, where = settings.kafka_security_protocol, f"Kafka at {host}:{port}"
    if isinstance(failure, (TimeoutError, KafkaTimeoutError, RequestTimedOutError)):
        # A port that speaks the other protocol hangs up at once; silence is a broker that is slow or stopped.
        log.debug("%s: no answer to the connection check: %r", where, failure)
        return None
    if protocol in TLS_PROTOCOLS:
        if await _answers_plaintext_kafka(host, port):
            plain = "SASL_PLAINTEXT" if protocol == "SASL_SSL" else "PLAINTEXT"
            return KafkaAccessRefused(
                f"{where} is no TLS listener, yet KAFKA_SECURITY_PROTOCOL={protocol}: connect to the broker's TLS"
                f" listener, or set KAFKA_SECURITY_PROTOCOL={plain}"
            )
        alert = await _tls_alert_after_handshake(settings, host, port)
        if alert is not None:
            return KafkaAccessRefused(
                f"{where} refused this client's certificate ({alert}): a listener with ssl.client.auth=required wants"
                " KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE, signed by a CA the broker trusts"
            )
    elif await _answers_tls(host, port):
        secured = "SASL_SSL" if protocol == "SASL_PLAINTEXT" else "SSL or SASL_SSL"
        return KafkaAccessRefused(
            f"{where} answers TLS, yet KAFKA_SECURITY_PROTOCOL={protocol} sends plaintext: set KAFKA_SECURITY_PROTOCOL to"
            f" {secured} (with KAFKA_SSL_CAFILE), or connect to the broker's plaintext listener"
        )
    log.debug("%s: connection check failed like an outage: %r", where, failure)
    return None


async def _answers_tls(host: str, port: int) -> bool:
    """Whether the port completes a TLS handshake, or answers one with a TLS alert."""
    # Only asks what the port speaks, and sends nothing over it: no certificate need be trusted.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except ssl.SSLError as exc:
        # A server that wants a client certificate may refuse the handshake with an alert: still TLS.
        return "ALERT" in str(exc.reason or "").upper()
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _tls_alert_after_handshake(settings: Settings, host: str, port: int) -> str | None:
    """The alert a broker sends right after the handshake, as it does (TLS 1.3) when it wants a client
    certificate it was not given or does not trust; None when it waits quietly for a request, as it should."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port, ssl=kafka_ssl_context(settings))
            try:
                await reader.read(1)
            finally:
                writer.close()
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc)
        return reason if "ALERT" in reason.upper() else None
    except (OSError, TimeoutError):
        return None
    return None


async def _answers_plaintext_kafka(host: str, port: int) -> bool:
    """Whether the port answers a Kafka version request sent without TLS."""
    try:
        conn = await create_conn(host, port, client_id="connection-check", request_timeout_ms=int(CHECK_TIMEOUT_S * 1000))
    except (OSError, TimeoutError, KafkaError):
        return False
    conn.close()
    return True
