import asyncio

import pymysql
import pytest
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaConnectionError, KafkaTimeoutError, NotLeaderForPartitionError

from service.retry import ShutdownRequested, is_transient, retry_until_done


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
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        CommitFailedError("rebalanced"),
        IllegalStateError("not assigned"),
        pymysql.err.ProgrammingError(1146, "Table doesn't exist"),
        ValueError("a bug"),
    ],
)
def test_bugs_and_rebalances_are_not_retried(error):
    """Retrying cannot fix a rebalance, a bad query or a bug: they propagate."""
    assert not is_transient(error)


async def test_backoff_doubles_up_to_the_maximum_and_succeeds():
    """Each failure waits longer, capped at max_backoff_s, until the step succeeds."""
    attempts = []

    async def step():
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 5:
            raise ConnectionRefusedError()
        return "done"

    result = await retry_until_done(step, what="test", stop=asyncio.Event(), initial_backoff_s=0.01, max_backoff_s=0.04)
    waits = [b - a for a, b in zip(attempts, attempts[1:])]
    assert result == "done"
    assert waits[1] > waits[0] * 1.5
    assert max(waits) < 0.04 * 3, "capped at the maximum (with scheduling slack)"


async def test_a_non_transient_error_is_raised_at_once():
    """A bug surfaces on the first attempt instead of looping."""
    calls = []

    async def step():
        calls.append(1)
        raise ValueError("bug")

    with pytest.raises(ValueError):
        await retry_until_done(step, what="test", stop=asyncio.Event(), initial_backoff_s=0.01, max_backoff_s=0.01)
    assert len(calls) == 1


async def test_a_stop_request_ends_the_wait():
    """While a dependency stays down, a stop request ends the retries with ShutdownRequested."""
    stop = asyncio.Event()

    async def step():
        raise ConnectionRefusedError()

    asyncio.get_running_loop().call_later(0.05, stop.set)
    with pytest.raises(ShutdownRequested):
        await retry_until_done(step, what="test", stop=stop, initial_backoff_s=10, max_backoff_s=10)
