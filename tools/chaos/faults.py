"""The faults, scripted on a timeline that runs while the load flows.

One fault at a time, each after a calm spell, so every recovery is seen on its own: kill -9 of
an instance (started again), a zombie (SIGSTOP past the session timeout, then SIGCONT), a
scale-in from 3 instances to 1 and back, MySQL answering 3 s late, MySQL killed and restarted,
and the broker killed and restarted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from tools.chaos.instances import Fleet
from tools.chaos.progress_lines import Reporter
from tools.chaos.stack import ChaosStack

KILL_INSTANCE = "kill -9 instance"
ZOMBIE = "zombie instance"
SCALE = "scale 3 → 1 → 3"
SLOW_MYSQL = "slow MySQL"
KILL_MYSQL = "kill -9 MySQL"
KILL_BROKER = "kill -9 broker"

INSTANCES = 3
SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_INTERVAL_MS = 2_000
# A frozen instance stays frozen this much past its session timeout, so the group evicts it
# and hands its partitions on while it still thinks it owns them.
ZOMBIE_HOLD_S = SESSION_TIMEOUT_MS / 1000 + 4
SLOW_MYSQL_DELAY_S = 3.0
# Seconds a fault takes beyond its hold (a JVM starting, a graceful stop), to size the load.
OVERHEAD_S = {KILL_BROKER: 15.0, KILL_MYSQL: 3.0, SCALE: 5.0}


@dataclass(frozen=True)
class Fault:
    kind: str
    calm_s: float  # flow without a fault before this one
    hold_s: float  # how long it lasts: down, frozen, scaled in or slow
    slot: int = 0  # the instance, for the faults on one


@dataclass(frozen=True)
class Timeline:
    faults: tuple[Fault, ...]
    tail_s: float  # flow after the last fault

    @property
    def nominal_s(self) -> float:
        """About how long it runs, for a load that lasts as long."""
        return sum(f.calm_s + f.hold_s + OVERHEAD_S.get(f.kind, 0.0) for f in self.faults) + self.tail_s


FULL = Timeline(
    (
        Fault(KILL_INSTANCE, calm_s=10, hold_s=3, slot=0),
        Fault(ZOMBIE, calm_s=10, hold_s=ZOMBIE_HOLD_S, slot=1),
        Fault(KILL_INSTANCE, calm_s=10, hold_s=3, slot=2),
        Fault(SCALE, calm_s=10, hold_s=15),
        Fault(SLOW_MYSQL, calm_s=12, hold_s=15),
        Fault(KILL_MYSQL, calm_s=10, hold_s=20),
        Fault(KILL_BROKER, calm_s=12, hold_s=20),
        Fault(KILL_INSTANCE, calm_s=15, hold_s=3, slot=1),
    ),
    tail_s=10,
)
# One of each kind, with shorter outages.
REDUCED = Timeline(
    (
        Fault(KILL_INSTANCE, calm_s=6, hold_s=2, slot=0),
        Fault(ZOMBIE, calm_s=6, hold_s=ZOMBIE_HOLD_S, slot=1),
        Fault(SCALE, calm_s=6, hold_s=6),
        Fault(SLOW_MYSQL, calm_s=6, hold_s=8),
        Fault(KILL_MYSQL, calm_s=5, hold_s=10),
        Fault(KILL_BROKER, calm_s=6, hold_s=10),
    ),
    tail_s=8,
)


@dataclass
class FaultRecord:
    kind: str
    detail: str
    started_s: float  # since the scenario began, as the progress lines show it
    ended_s: float
    started_at: float  # epoch seconds, to set beside the input records' Kafka timestamps
    ended_at: float


async def run_timeline(timeline: Timeline, fleet: Fleet, stack: ChaosStack, reporter: Reporter) -> list[FaultRecord]:
    records = []
    for fault in timeline.faults:
        await asyncio.sleep(fault.calm_s)
        started, started_at = reporter.elapsed_s(), time.time()
        detail = await _inject(fault, fleet, stack, reporter)
        records.append(FaultRecord(fault.kind, detail, round(started, 1), round(reporter.elapsed_s(), 1), started_at, time.time()))
    await asyncio.sleep(timeline.tail_s)
    return records


async def _inject(fault: Fault, fleet: Fleet, stack: ChaosStack, reporter: Reporter) -> str:
    """Start the fault, hold it, end it; returns what happened, in a few words."""
    say, slot = reporter.say, fault.slot
    if fault.kind == KILL_INSTANCE:
        say(f"fault: kill -9 instance {slot} (pid {fleet.kill(slot)}); it starts again in {fault.hold_s:g} s")
        await asyncio.sleep(fault.hold_s)
        say(f"instance {slot} started again (pid {fleet.start(slot).process.pid})")
        return f"instance {slot}"
    if fault.kind == ZOMBIE:
        say(f"fault: SIGSTOP instance {slot} (pid {fleet.freeze(slot)}) for {fault.hold_s:g} s, past its {SESSION_TIMEOUT_MS} ms session")
        await asyncio.sleep(fault.hold_s)
        fleet.thaw(slot)
        say(f"SIGCONT instance {slot}: back as a zombie that the group has evicted")
        return f"instance {slot}, frozen {fault.hold_s:g} s"
    if fault.kind == SCALE:
        leaving = [s for s in sorted(fleet.live) if s != 0]
        say(f"fault: scale in to 1 instance: SIGTERM instances {leaving}")
        codes = await asyncio.gather(*(fleet.stop(s) for s in leaving))
        say(f"scaled in (exit codes {list(codes)}); scaling out again in {fault.hold_s:g} s")
        await asyncio.sleep(fault.hold_s)
        for s in leaving:
            fleet.start(s)
        say(f"scaled out to {len(fleet.live)} instances")
        return f"exit codes {list(codes)}"
    if fault.kind == SLOW_MYSQL:
        say(f"fault: MySQL slow: every answer through the proxy waits {SLOW_MYSQL_DELAY_S:g} s, for {fault.hold_s:g} s")
        stack.proxy.delay_s = SLOW_MYSQL_DELAY_S
        await asyncio.sleep(fault.hold_s)
        stack.proxy.delay_s = 0.0
        say("MySQL fast again")
        return f"{SLOW_MYSQL_DELAY_S:g} s per answer for {fault.hold_s:g} s"
    if fault.kind == KILL_MYSQL:
        stack.mysql.kill()
        say(f"fault: kill -9 MySQL; restarting it in {fault.hold_s:g} s")
        await asyncio.sleep(fault.hold_s)
        return f"down {fault.hold_s:g} s + {await _restart('MySQL', stack.mysql.start, say):.1f} s to start"
    if fault.kind == KILL_BROKER:
        stack.kafka.kill()
        say(f"fault: kill -9 the broker; restarting it in {fault.hold_s:g} s")
        await asyncio.sleep(fault.hold_s)
        taken = await _restart("the broker", lambda: stack.kafka.start(format_storage=False), say)
        return f"down {fault.hold_s:g} s + {taken:.1f} s to start"
    raise ValueError(f"unknown fault {fault.kind!r}")


async def _restart(what: str, start: Callable[[], object], say: Callable[[str], None]) -> float:
    started = time.monotonic()
    # In a thread: the load and the progress lines go on while the server boots.
    await asyncio.to_thread(start)
    taken = time.monotonic() - started
    say(f"{what} restarted on the same data and port ({taken:.1f} s to start)")
    return taken
