"""Graceful shutdown: the first SIGINT/SIGTERM asks the program to finish what it has in hand.

A stop request is honoured in every state, and within a deadline: the signal is caught from
the first line of the entry point (before heavy imports and the model load), and a watchdog
ends the process if the orderly shutdown has not finished by the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time

log = logging.getLogger(__name__)

# 128 + SIGINT, the shell's convention for "interrupted".
FORCED_EXIT_CODE = 130
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Set by the early handler: (signal number, monotonic time) of a stop that came before the
# event loop could take it.
_early_stop: tuple[int, float] | None = None


def catch_stop_signals_early() -> None:
    """Remember a SIGINT/SIGTERM that arrives while the program is still starting.

    Without this, a signal during the imports or the model load kills the process outright
    (exit -15) instead of stopping it cleanly. `stop_on_signals` acts on it once a loop runs.
    """

    def remember(signum: int, _frame) -> None:
        global _early_stop
        if _early_stop is None:
            _early_stop = (signum, time.monotonic())

    for signum in STOP_SIGNALS:
        signal.signal(signum, remember)


class ShutdownClock:
    """When the stop was requested, and how much of the shutdown deadline is left."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.requested_at: float | None = None

    def start(self, at: float | None = None) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic() if at is None else at

    def remaining_s(self, default_s: float) -> float:
        """Seconds left before the deadline; `default_s` when no stop was requested."""
        if self.requested_at is None:
            return default_s
        return max(0.0, self.requested_at + self.timeout_s - time.monotonic())


def stop_on_signals(stop: asyncio.Event, shutdown_timeout_s: float | None = None) -> ShutdownClock:
    """Set `stop` on the first SIGINT or SIGTERM (or on one caught early); a second one exits at once.

    With `shutdown_timeout_s`, a watchdog exits the process that long after the first signal,
    whatever it is still waiting for. Exiting then loses nothing: offsets are committed only
    after outputs are acknowledged, so whatever was in hand is processed again on the next start.
    """
    loop = asyncio.get_running_loop()
    clock = ShutdownClock(shutdown_timeout_s or 0.0)

    def request_stop(signum: int, at: float | None = None) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now; uncommitted work will be replayed", signal.Signals(signum).name)
            os._exit(FORCED_EXIT_CODE)
        log.info("%s received: finishing the work in hand, then stopping", signal.Signals(signum).name)
        clock.start(at)
        stop.set()
        if shutdown_timeout_s is not None:
            _start_watchdog(clock)

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, request_stop, signum)
    if _early_stop is not None:
        request_stop(*_early_stop)
    return clock


def _start_watchdog(clock: ShutdownClock) -> None:
    def exit_now() -> None:
        log.error(
            "still shutting down %.0f s after the stop request (SHUTDOWN_TIMEOUT_S); exiting now,"
            " uncommitted work will be processed again on the next start", clock.timeout_s,
        )
        logging.shutdown()
        os._exit(0)

    timer = threading.Timer(clock.remaining_s(clock.timeout_s), exit_now)
    timer.daemon = True
    timer.start()
