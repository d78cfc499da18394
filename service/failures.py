"""What an error from Kafka, MySQL or the network means to the service, in the error root's terms
(errors.py): may it be retried, is it a set-up to fix, or did Kafka refuse one record for what
it is. Every retry decision and exit code of the service is read from here.
"""

from __future__ import annotations

import ssl

import pymysql
from aiokafka.errors import (
    IllegalOperation,
    InvalidTimestampError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from config import Settings
from errors import BUG_EXIT_CODE, SETUP_EXIT_CODE, PredictionError, SetupError
from messaging.kafka_security import KAFKA_AUTHENTICATION_ERRORS, KAFKA_AUTHORIZATION_ERRORS, authorization_summary, kafka_refusal

# MySQL error codes that pass by themselves: the server cannot be reached, went away or is
# shutting down (2002, 2003, 2006, 2013, 2055, 1053, 1927, 4031), has too many connections
# (1040), or a lock wait or deadlock (1205, 1213). Access denied, unknown database and the like
# are settings to fix, not outages: retrying them would only hide the message.
TRANSIENT_MYSQL_CODES = frozenset({1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055, 4031})

# Kafka refusing the service's writes, transactions or group: a grant to add, not an outage.
KAFKA_SETUP_REFUSALS = KAFKA_AUTHORIZATION_ERRORS
# TLS failing for what it is shown (an untrusted certificate, no common protocol), not because the
# connection dropped in the middle (EOF): the same answer comes back however often it is asked.
TLS_EOF_ERRORS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLWantReadError, ssl.SSLWantWriteError, ssl.SSLSyscallError)
# Kafka refusing a record for what it is (too large, a bad timestamp): that record's problem alone.
KAFKA_RECORD_REFUSALS = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidTimestampError)


def retriable(exc: BaseException) -> bool:
    """True when a dependency is unavailable, as opposed to a bug, a bad setting or a bad event.

    A retriable failure is retried: its records are never dead-lettered and their offsets stay
    uncommitted meanwhile. Anything else propagates and stops the service, uncommitted too.
    """
    if isinstance(exc, PredictionError):
        return exc.retriable
    if tls_refusal(exc) is not None:
        return False
    if isinstance(exc, pymysql.err.OperationalError):
        return bool(exc.args) and exc.args[0] in TRANSIENT_MYSQL_CODES
    if isinstance(exc, (pymysql.err.InterfaceError, KafkaTimeoutError)):
        return True  # a closed connection; a delivery not acknowledged in time
    if isinstance(exc, KafkaError):
        return bool(exc.retriable)
    # Lost connections and passed deadlines (ConnectionError and TimeoutError are OSErrors).
    return isinstance(exc, OSError)


def kafka_setup_refusal(exc: BaseException) -> bool:
    return isinstance(exc, KAFKA_SETUP_REFUSALS)


def kafka_access_refusal(exc: BaseException) -> bool:
    """Kafka refusing a grant, or who the client is or how it logs in: a setting or an ACL, never an outage."""
    return isinstance(exc, KAFKA_SETUP_REFUSALS + KAFKA_AUTHENTICATION_ERRORS)


def tls_refusal(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind `exc` (itself, or what a MySQL connection error was raised from) when TLS
    failed for a reason that does not pass by itself, such as a certificate not trusted."""
    # aiomysql raises "Can't connect" (2003, an outage's code) from the TLS error.
    error = exc.__cause__ if isinstance(exc, pymysql.err.OperationalError) else exc
    if isinstance(error, ssl.SSLError) and not isinstance(error, TLS_EOF_ERRORS):
        return error
    return None


def record_refusal(exc: BaseException) -> bool:
    return isinstance(exc, KAFKA_RECORD_REFUSALS)


def redo_can_pass(exc: BaseException) -> bool:
    """Whether a transaction that failed with `exc` may succeed when redone by a new producer:
    anything Kafka or the network said, short of a refusal of the set-up; not a bug."""
    if isinstance(exc, PredictionError):
        return exc.retriable
    return isinstance(exc, (KafkaError, IllegalOperation, OSError)) and not kafka_access_refusal(exc) and tls_refusal(exc) is None


def exit_code(exc: BaseException) -> int:
    """The code a program stopped by `exc` exits with."""
    if isinstance(exc, PredictionError):
        return exc.exit_code
    if isinstance(exc, pymysql.err.MySQLError) or kafka_access_refusal(exc) or tls_refusal(exc) is not None:
        # Outages are retried inside; what stops the service is a setting or a grant to fix.
        return SETUP_EXIT_CODE
    return BUG_EXIT_CODE


def as_setup_error(exc: BaseException, settings: Settings) -> SetupError | None:
    """The one-message SetupError a program stops with for a library's refusal; None for anything else.

    Kafka's authorization errors name the topic, group or transactional id refused and what to
    grant; a TLS failure is said with its reason.
    """
    if isinstance(exc, SetupError):
        return exc
    refusal = kafka_refusal(exc, settings)
    if refusal is not None:
        return refusal
    if kafka_access_refusal(exc):
        return SetupError(f"Kafka refused this client: {describe_error(exc)}; check the KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_* settings")
    tls = tls_refusal(exc)
    if tls is not None:
        return SetupError(f"TLS failed: {describe_error(exc)}; check the KAFKA_SSL_* / MYSQL_SSL_* settings and the server's certificate")
    return None


def describe_error(exc: BaseException) -> str:
    """`Type: message`, with something to read where the message is empty (a bare timeout), the topic,
    group or transactional id an authorization error names, and the TLS failure behind a connection error."""
    refused = authorization_summary(exc)
    if refused is not None:
        return f"{type(exc).__name__}: {refused}"
    text = str(exc).strip()
    if not text and isinstance(exc, TimeoutError):
        text = "no answer before the deadline"
    tls = tls_refusal(exc)
    if tls is not None and tls is not exc:
        text = f"{text} ({type(tls).__name__}: {tls})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
