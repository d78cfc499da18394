"""Sorting the libraries' errors into the error root's terms: retriable, a set-up to fix, or a bug."""

import pymysql
import pytest
from aiokafka.errors import (
    CommitFailedError,
    GroupAuthorizationFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from config import ConfigError
from errors import BUG_EXIT_CODE, SETUP_EXIT_CODE, PredictionError, ShutdownRequested
from events.schema import InvalidEvent
from model.artifact import ModelArtifactError
from offline_store.mysql import OfflineStoreNotReady
from service.delivery.refusals import OutputRefused
from service.failures import exit_code, kafka_setup_refusal, record_refusal, redo_can_pass, retriable
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
        EndpointUnavailable("port"),
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
    "error", [TopicAuthorizationFailedError(), GroupAuthorizationFailedError(), TransactionalIdAuthorizationFailed()]
)
def test_a_missing_grant_is_a_set_up_refusal_that_no_redo_gets_past(error):
    """One list of refusals for the publisher and the transactions alike."""
    assert kafka_setup_refusal(error) and not redo_can_pass(error) and not retriable(error)


def test_a_record_refusal_is_that_records_alone_and_an_outage_can_be_redone():
    assert record_refusal(MessageSizeTooLargeError()) and not kafka_setup_refusal(MessageSizeTooLargeError())
    assert redo_can_pass(KafkaConnectionError()) and redo_can_pass(ConnectionResetError())
    assert not redo_can_pass(ValueError("a bug"))
