import asyncio

import pytest

from errors import ShutdownRequested
from service.failures import describe_error
from service.retry import Backoff, retry_until_done, unless_stopped


def test_the_backoff_schedule_doubles_up_to_the_maximum():
    """Waits double from the initial value and then stay at the maximum."""
    delays = Backoff(0.2, 1.0).delays()
    assert [next(delays) for _ in range(6)] == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


async def test_retries_follow_the_schedule_until_the_step_succeeds():
    """Each failure waits the next delay of the schedule (recorded, not timed), then the result comes back."""
    attempts, waits = [], []

    async def step():
        attempts.append(1)
        if len(attempts) < 5:
            raise ConnectionRefusedError()
        return "done"

    async def pause(stop, seconds):
        waits.append(seconds)
        return False

    result = await retry_until_done(step, dependency="MySQL", action="test", stop=asyncio.Event(), backoff=Backoff(0.01, 0.04), pause=pause)
    assert result == "done"
    assert waits == [0.01, 0.02, 0.04, 0.04]


async def test_a_retry_line_names_the_dependency_the_error_and_the_next_wait(caplog):
    """An operator reads which dependency failed, why (even for a bare timeout) and when the next try is."""
    attempts = []

    async def step():
        attempts.append(1)
        if len(attempts) == 1:
            raise TimeoutError()
        return None

    async def pause(stop, seconds):
        return False

    await retry_until_done(
        step, dependency="MySQL", action="looking up features", stop=asyncio.Event(), backoff=Backoff(0.25, 1), pause=pause
    )
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == "MySQL unavailable while looking up features (attempt 1): TimeoutError: no answer before the deadline; next try in 0.2 s"


def test_an_error_without_a_message_is_still_described():
    """A bare exception reads as its type, a bare timeout says what it means."""
    assert describe_error(ConnectionResetError()) == "ConnectionResetError"
    assert describe_error(TimeoutError()) == "TimeoutError: no answer before the deadline"
    assert describe_error(KeyError("x")) == "KeyError: 'x'"


async def test_a_non_transient_error_is_raised_at_once():
    """A bug surfaces on the first attempt instead of looping."""
    calls = []

    async def step():
        calls.append(1)
        raise ValueError("bug")

    with pytest.raises(ValueError):
        await retry_until_done(step, dependency="Kafka", action="test", stop=asyncio.Event(), backoff=Backoff(0.01, 0.01))
    assert len(calls) == 1


async def test_a_stop_request_ends_the_wait():
    """While a dependency stays down, a stop request ends the retries with ShutdownRequested."""
    stop = asyncio.Event()

    async def step():
        raise ConnectionRefusedError()

    asyncio.get_running_loop().call_later(0.05, stop.set)
    with pytest.raises(ShutdownRequested):
        await retry_until_done(step, dependency="Kafka", action="test", stop=stop, backoff=Backoff(10, 10))


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
