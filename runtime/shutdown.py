"""Graceful shutdown: the first SIGINT/SIGTERM asks the program to finish what it has in hand."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

log = logging.getLogger(__name__)

# 128 + SIGINT, the shell's convention for "interrupted".
FORCED_EXIT_CODE = 130


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set `stop` on the first SIGINT or SIGTERM; a second one exits at once.

    Exiting at once loses nothing: offsets are committed only after outputs are acknowledged,
    so whatever was in hand is processed again on the next start.
    """
    loop = asyncio.get_running_loop()

    def handle(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now; uncommitted work will be replayed", signal.Signals(signum).name)
            os._exit(FORCED_EXIT_CODE)
        log.info("%s received: finishing the work in hand, then stopping", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, handle, signum)
