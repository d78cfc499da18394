"""Notices a new model version and has it loaded and checked, without stopping the loop.

Every MODEL_POLL_S (and at once on SIGHUP) the watcher asks the source what it points at: a
file's identity, a registry's serving pointer, an MLflow alias. When that changes, the new
version is fetched, checked and warmed in worker threads, then left in its slot for the loop to
swap in between batches. A candidate that fails a check is refused with one ERROR naming the
reason and a counter; the serving version keeps serving and the refused one is not tried again
until the source changes or SIGHUP asks. A source that cannot be read (an MLflow server away)
is retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from model.artifact import ModelArtifactError
from model.sources import ModelSource
from service.failures import describe_error
from service.models.loading import fetch_and_load
from service.models.slots import ModelSlot, Pending
from service.observe.model_stats import ModelStats
from service.retry import Backoff

log = logging.getLogger(__name__)


class ModelWatcher:
    def __init__(self, slot: ModelSlot, source: ModelSource, poll_s: float, stats: ModelStats, backoff: Backoff) -> None:
        self._slot = slot
        self._source = source
        self._poll_s = poll_s
        self._stats = stats
        self._backoff = backoff
        self._refused: str | None = None  # the fingerprint of the last candidate refused
        self._failures = 0  # consecutive failures to read the source
        self.role = slot.role
        self.wake = asyncio.Event()  # set on SIGHUP: check now, and give a refused version another chance

    async def run(self) -> None:
        while True:
            wait_s = self._backoff.delay(self._failures) if self._failures else (self._poll_s or None)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self.wake.wait()
            forced = self.wake.is_set()
            self.wake.clear()
            await self.check(forced)

    async def check(self, forced: bool = False) -> None:
        """One look at the source; a new, valid version ends up in the slot's `pending`."""
        slot, role = self._slot, self._slot.role
        try:
            fingerprint = await asyncio.to_thread(self._source.fingerprint)
            current = slot.pending.fingerprint if slot.pending is not None else slot.fingerprint
            if fingerprint == current or (fingerprint == self._refused and not forced):
                self._failures = 0
                return
            model, candidate = await fetch_and_load(self._source)
        except ModelArtifactError as exc:
            self._failures = 0
            self._refused = fingerprint
            self._stats.refused[(role, exc.reason)] += 1
            log.error("refused the new %s model (%s): %s; %s keeps serving", role, exc.reason, exc, self._serving_version())
            return
        except Exception as exc:  # noqa: BLE001 - a registry away or unreadable must not stop serving
            self._failures += 1
            self._stats.source_errors[role] += 1
            log.warning("cannot read the %s model source %s (attempt %d): %s; %s keeps serving, retrying in %.1f s",
                        role, self._source.uri, self._failures, describe_error(exc), self._serving_version(),
                        self._backoff.delay(self._failures))
            return
        self._failures = 0
        self._refused = None
        slot.pending = Pending(model, candidate.fingerprint, candidate.label)
        log.info("%s model %s loaded and checked (%s); it takes over between batches", role, model.version, candidate.label)

    def _serving_version(self) -> str:
        model = self._slot.model
        return f"version {model.version}" if model is not None else "no model"
