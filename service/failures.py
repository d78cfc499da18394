"""What an error from Kafka, MySQL or the network means to the service, in the error root's terms
(errors.py): may it be retried, is it a set-up to fix, or did Kafka refuse one record for what
it is. Every retry decision and exit code of the service is read from here.
"""

from __future__ import annotations

import pymysql
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalOperation,
    InvalidTimestampError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from errors import BUG_EXIT_CODE, SETUP_EXIT_CODE, PredictionError

# MySQL error codes that pass by themselves: the server cannot be reached, went away or is
# shutting down (2002, 2003, 2006, 2013, 2055, 1053, 1927, 4031), has too many connections
# (1040), or a lock wait or deadlock (1205, 1213). Access denied, unknown database and the like
# are settings to fix, not outages: retrying them would only hide the message.
TRANSIENT_MYSQL_CODES = frozenset({1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055, 4031})

# Kafka refusing the service's writes, transactions or group: a grant to add, not an outage.
KAFKA_SETUP_REFUSALS = (
    TopicAuthorizationFailedError, ClusterAuthorizationFailedError, TransactionalIdAuthorizationFailed, GroupAuthorizationFailedError,
)
# Kafka refusing a record for what it is (too large, a bad timestamp): that record's problem alone.
KAFKA_RECORD_REFUSALS = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidTimestampError)


def retriable(exc: BaseException) -> bool:
    """True when a dependency is unavailable, as opposed to a bug, a bad setting or a bad event.

    A retriable failure is retried: its records are never dead-lettered and their offsets stay
    uncommitted meanwhile. Anything else propagates and stops the service, uncommitted too.
    """
    if isinstance(exc, PredictionError):
        return exc.retriable
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


def record_refusal(exc: BaseException) -> bool:
    return isinstance(exc, KAFKA_RECORD_REFUSALS)


def redo_can_pass(exc: BaseException) -> bool:
    """Whether a transaction that failed with `exc` may succeed when redone by a new producer:
    anything Kafka or the network said, short of a refusal of the set-up; not a bug."""
    if isinstance(exc, PredictionError):
        return exc.retriable
    return isinstance(exc, (KafkaError, IllegalOperation, OSError)) and not kafka_setup_refusal(exc)


def exit_code(exc: BaseException) -> int:
    """The code a program stopped by `exc` exits with."""
    if isinstance(exc, PredictionError):
        return exc.exit_code
    if isinstance(exc, pymysql.err.MySQLError):
        # Outages are retried inside; what stops the service is a setting to fix.
        return SETUP_EXIT_CODE
    return BUG_EXIT_CODE


def describe_error(exc: BaseException) -> str:
    """`Type: message`, with something to read where the message is empty (a bare timeout)."""
    text = str(exc).strip()
    if not text and isinstance(exc, TimeoutError):
        text = "no answer before the deadline"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
