"""Progress lines: what the harness is doing, stamped with the seconds since its scenario began."""

from __future__ import annotations

import time


class Reporter:
    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def say(self, message: str) -> None:
        # Flushed at once: under `make` or a pipe, a long silence must not look like a hang.
        print(f"[{self.label} {self.elapsed_s():6.1f} s] {message}", flush=True)
