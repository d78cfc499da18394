"""Sorting the libraries' errors into the error root's terms: retriable, a set-up to fix, or a bug."""

import ssl

import pymysql
import pytest
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    CommitFailedError,
    GroupAuthorizationFailedError,
    IllegalSaslStateError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)

from config import ConfigError, Settings
from errors import BUG_EXIT_CODE, SETUP_EXIT_CODE, PredictionError, SetupError, ShutdownRequested
from events.schema import InvalidEvent
from messaging.kafka_security import KafkaAccessRefused
from model.artifact import ModelArtifactError
from offline_store.mysql import MySQLTLSRefused, OfflineStoreNotReady
from service.delivery.refusals import OutputRefused
from service.failures import (
    as_setup_error,
    describe_error,
    exit_code,
    kafka_setup_refusal,
    record_refusal,
    redo_can_pass,
    retriable,
)
from service.observe.endpoints import EndpointUnavailable


@pytest.mark.parametrize(
    "error",
    [
        pymysql.err.OperationalError(2003, "Can't connect"),
        pymysql.err.InterfaceError(0, ""),
        TimeoutError(),
        ConnectionResetError(),
        KafkaConnectionError(),
        KafkaTimeoutError(),
        NotLeaderForPartitionError(),
    ],
)
def test_outages_are_transient(error):
    """Unreachable MySQL or Kafka, lost connections and deadlines are retried."""
    assert retriable(error)


@pytest.mark.parametrize(
    "error",
    [
        CommitFailedError("rebalanced"),
        IllegalStateError("not assigned"),
        pymysql.err.ProgrammingError(1146, "Table doesn't exist"),
        pymysql.err.OperationalError(1045, "Access denied for user"),
        pymysql.err.OperationalError(1049, "Unknown database"),
        ValueError("a bug"),
    ],
)
def test_bugs_bad_settings_and_rebalances_are_not_retried(error):
    """Retrying cannot fix a rebalance, a wrong password or database, a bad query or a bug: they propagate."""
    assert not retriable(error)


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("X", "bad"), ModelArtifactError("missing", "gone"), OfflineStoreNotReady("empty"), OutputRefused("acl"),
        EndpointUnavailable("port"), KafkaAccessRefused("credentials"), MySQLTLSRefused("no TLS"),
    ],
)
def test_every_set_up_error_stops_a_program_with_exit_code_2_and_is_never_retried(error):
    """A setting, a grant or an artifact to fix: one message and exit code 2, whoever raises it."""
    assert isinstance(error, PredictionError)
    assert exit_code(error) == SETUP_EXIT_CODE
    assert not retriable(error) and not redo_can_pass(error)


def test_a_mysql_refusal_exits_with_2_and_a_bug_with_1():
    assert exit_code(pymysql.err.OperationalError(1045, "Access denied for user")) == SETUP_EXIT_CODE
    assert exit_code(ValueError("a bug")) == BUG_EXIT_CODE
    assert exit_code(ShutdownRequested("joining the group")) == BUG_EXIT_CODE


def test_a_bad_input_record_is_neither_retried_nor_a_set_up_error():
    error = InvalidEvent("not_json", "{")
    assert isinstance(error, ValueError) and isinstance(error, PredictionError)
    assert not retriable(error) and exit_code(error) == BUG_EXIT_CODE


@pytest.mark.parametrize(
    "error",
    [
        TopicAuthorizationFailedError(), GroupAuthorizationFailedError(), TransactionalIdAuthorizationFailed(),
        ClusterAuthorizationFailedError(),
    ],
)
def test_a_missing_grant_is_a_set_up_refusal_that_no_redo_gets_past(error):
    """One list of refusals for the publisher and the transactions alike."""
    assert kafka_setup_refusal(error) and not redo_can_pass(error) and not retriable(error)


def test_a_record_refusal_is_that_records_alone_and_an_outage_can_be_redone():
    assert record_refusal(MessageSizeTooLargeError()) and not kafka_setup_refusal(MessageSizeTooLargeError())
    assert redo_can_pass(KafkaConnectionError()) and redo_can_pass(ConnectionResetError())
    assert not redo_can_pass(ValueError("a bug"))


# -- Kafka and MySQL refusing who the client is, its certificate or its grants ------------------

SASL_SETTINGS = Settings(
    kafka_security_protocol="SASL_SSL", kafka_sasl_username="svc", kafka_sasl_password="pw", kafka_group_id="grp",
)


def _raised_from(error: pymysql.err.OperationalError, cause: BaseException) -> pymysql.err.OperationalError:
    """As aiomysql raises a failed connect: "Can't connect" (2003), from what the socket said."""
    error.__cause__ = cause
    return error


def _certificate_not_trusted() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate")
    error.verify_code, error.verify_message = 19, "self-signed certificate in certificate chain"
    return error


@pytest.mark.parametrize(
    ("error", "named"),
    [
        (TopicAuthorizationFailedError("output_topic"), "topic output_topic"),
        (GroupAuthorizationFailedError("grp"), "consumer group grp"),
        (TransactionalIdAuthorizationFailed("grp-input_topic-0"), "transactional id grp-input_topic-0"),
        (ClusterAuthorizationFailedError(), "KAFKA_SASL_USERNAME"),
        (SaslAuthenticationFailed("Authentication failed during authentication due to invalid credentials"), "KAFKA_SASL_"),
        (UnsupportedSaslMechanismError(), "KAFKA_SASL_"),
        (IllegalSaslStateError(), "KAFKA_SASL_"),
        (_certificate_not_trusted(), "self-signed certificate"),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "WRONG_VERSION_NUMBER"),
        (_raised_from(pymysql.err.OperationalError(2003, "Can't connect to MySQL server"), _certificate_not_trusted()), "self-signed"),
        (KafkaAccessRefused("Kafka at b:9094 refused the credentials of svc (SCRAM-SHA-512)"), "credentials of svc"),
        (MySQLTLSRefused("MySQL at db:3306 does not offer TLS, yet MYSQL_SSL_MODE=required"), "MYSQL_SSL_MODE"),
    ],
)
def test_a_refused_login_certificate_or_grant_stops_with_2_and_one_message_naming_it(error, named):
    """Never retried, never redone by a new producer; the program stops with exit code 2 and says what to fix."""
    assert not retriable(error) and not redo_can_pass(error)
    assert exit_code(error) == SETUP_EXIT_CODE
    setup = as_setup_error(error, SASL_SETTINGS)
    assert isinstance(setup, SetupError) and setup.exit_code == SETUP_EXIT_CODE
    assert named in str(setup)


def test_describe_error_names_what_a_grant_was_refused_for():
    assert describe_error(TopicAuthorizationFailedError("output_topic")) == "TopicAuthorizationFailedError: no access to topic output_topic"
    assert describe_error(TopicAuthorizationFailedError({"b", "a"})) == "TopicAuthorizationFailedError: no access to topic a, b"
    assert describe_error(GroupAuthorizationFailedError("grp")) == "GroupAuthorizationFailedError: no access to consumer group grp"
    assert describe_error(TransactionalIdAuthorizationFailed("grp-t-1")).endswith("no access to transactional id grp-t-1")


def test_describe_error_shows_the_tls_failure_behind_a_mysql_connect():
    error = _raised_from(pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'db'"), _certificate_not_trusted())
    assert "SSLCertVerificationError" in describe_error(error) and "self-signed" in describe_error(error)


@pytest.mark.parametrize(
    "error",
    [
        ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
        _raised_from(pymysql.err.OperationalError(2003, "Can't connect"), ssl.SSLEOFError(8, "EOF")),
        _raised_from(pymysql.err.OperationalError(2003, "Can't connect"), ConnectionRefusedError()),
    ],
)
def test_a_connection_dropped_during_the_handshake_is_still_an_outage(error):
    """A server going down mid-handshake, or not up yet, passes by itself: retried, not a set-up error."""
    assert retriable(error)
    assert as_setup_error(error, SASL_SETTINGS) is None


def test_a_bug_is_no_setup_error():
    assert as_setup_error(ValueError("a bug"), SASL_SETTINGS) is None
