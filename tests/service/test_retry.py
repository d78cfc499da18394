import asyncio

import pymysql
import pytest
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaConnectionError, KafkaTimeoutError, NotLeaderForPartitionError

from service.retry import Backoff, ShutdownRequested, is_transient, retry_until_done, unless_stopped


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
        pymysql.err.OperationalError(1045, "Access denied for user"),
        pymysql.err.OperationalError(1049, "Unknown database"),
        ValueError("a bug"),
    ],
)
def test_bugs_bad_settings_and_rebalances_are_not_retried(error):
    """Retrying cannot fix a rebalance, a wrong password or database, a bad query or a bug: they propagate."""
    assert not is_transient(error)


async def test_backoff_doubles_up_to_the_maximum_and_succeeds():
    """Each failure waits longer, capped at the maximum, until the step succeeds."""
    attempts = []

    async def step():
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 5:
            raise ConnectionRefusedError()
        return "done"

    result = await retry_until_done(step, what="test", stop=asyncio.Event(), backoff=Backoff(0.01, 0.04))
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
        await retry_until_done(step, what="test", stop=asyncio.Event(), backoff=Backoff(0.01, 0.01))
    assert len(calls) == 1


async def test_a_stop_request_ends_the_wait():
    """While a dependency stays down, a stop request ends the retries with ShutdownRequested."""
    stop = asyncio.Event()

    async def step():
        raise ConnectionRefusedError()

    asyncio.get_running_loop().call_later(0.05, stop.set)
    with pytest.raises(ShutdownRequested):
        await retry_until_done(step, what="test", stop=stop, backoff=Backoff(10, 10))


async def test_unless_stopped_returns_the_result_when_the_work_finishes_first():
    """Nothing to stop: the awaited value comes back."""
    assert await unless_stopped(asyncio.sleep(0, result=7), asyncio.Event(), "test") == 7


async def test_unless_stopped_abandons_work_that_never_ends_when_stopped():
    """A call with no deadline of its own (like joining a group with Kafka down) yields to a stop request."""
    stop = asyncio.Event()
    never = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    with pytest.raises(ShutdownRequested):
        await unless_stopped(never, stop, "test")
    assert never.cancelled()
