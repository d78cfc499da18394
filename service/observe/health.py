"""What /healthz and /readyz answer: is the loop alive, and is the instance ready for events.

Alive: the loop polled, finished or abandoned a batch, or retried a step within
KAFKA_MAX_POLL_INTERVAL_MS (the same bound past which Kafka itself gives the member up).
Ready: the model is loaded, the consumer group is joined, and MySQL answers.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from service.observe.model_stats import ModelStats
from service.observe.stats import ServiceStats

# A probe is cheap, but a scraper and a healthcheck each asking every few seconds should not
# add a query per request; the answer is reused for this long.
MYSQL_PROBE_MAX_AGE_S = 5.0
# Shorter than a healthcheck's own timeout, so a MySQL outage reads as "not ready", not as no answer.
MYSQL_PROBE_TIMEOUT_S = 2.0


@dataclass
class HealthState:
    stats: ServiceStats
    stall_after_s: float
    model_version: str | None = None  # the version loaded at start-up: readiness
    models: ModelStats | None = None  # which versions serve now, swaps, refusals, the shadow
    group_joined: bool = False
    mysql_reachable: bool = False
    # Set once the pool exists; raises when MySQL does not answer.
    mysql_probe: Callable[[], Awaitable[object]] | None = None
    loop_started_mono_s: float | None = None
    _probed_mono_s: float = field(default=float("-inf"))

    @property
    def model_loaded(self) -> bool:
        return self.model_version is not None

    def mark_loop_started(self) -> None:
        self.loop_started_mono_s = time.monotonic()

    def seconds_since_activity(self, now: float | None = None) -> float | None:
        """Since the loop last acted; None while the service is still starting."""
        if self.loop_started_mono_s is None:
            return None
        now = time.monotonic() if now is None else now
        return max(0.0, now - max(self.loop_started_mono_s, self.stats.last_active_mono_s))

    def liveness(self, now: float | None = None) -> tuple[bool, dict[str, Any]]:
        idle_s = self.seconds_since_activity(now)
        if idle_s is None:
            # Start-up steps retry with their own log lines and give way to a stop request.
            return True, {"status": "starting"}
        alive = idle_s <= self.stall_after_s
        return alive, {
            "status": "ok" if alive else "stalled",
            "seconds_since_activity": round(idle_s, 3),
            "bound_s": self.stall_after_s,
        }

    def checks(self) -> dict[str, bool]:
        return {"model_loaded": self.model_loaded, "group_joined": self.group_joined, "mysql_reachable": self.mysql_reachable}

    async def readiness(self, now: float | None = None) -> tuple[bool, dict[str, Any]]:
        await self.refresh_mysql(now)
        checks = self.checks()
        ready = all(checks.values())
        return ready, {"status": "ready" if ready else "not ready", **checks}

    async def refresh_mysql(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.mysql_probe is None or now - self._probed_mono_s < MYSQL_PROBE_MAX_AGE_S:
            return
        self._probed_mono_s = now
        try:
            await self.mysql_probe()
        except Exception:  # noqa: BLE001 - whatever the failure, the answer is "not reachable"
            self.mysql_reachable = False
        else:
            self.mysql_reachable = True

    def track_group(self, listener: ConsumerRebalanceListener) -> ConsumerRebalanceListener:
        """`listener`, also keeping `group_joined` up to date through rebalances."""
        return _TrackGroup(self, listener)


class _TrackGroup(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types
    def __init__(self, health: HealthState, inner: ConsumerRebalanceListener) -> None:
        self._health = health
        self._inner = inner

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        # A rebalance has begun: until it ends this member holds no settled assignment.
        self._health.group_joined = False
        await self._inner.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        await self._inner.on_partitions_assigned(assigned)
        # Joined even with no partitions (more instances than partitions): a spare is ready.
        self._health.group_joined = True
