"""The benchmark's scenarios: drain a backlog, or hold a steady rate, and measure what came out."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from config import Settings
from tools.bench.bench_topics import TopicTimes, create_topics, events, load_backlog, read_times, record_count
from tools.bench.kcat import arrivals_watched, send_paced
from tools.bench.processes import Pinned, start_pinned

USERS = 10_000
# The programs under test are started from the project folder with these arguments to Python.
SERVICE = ("prediction_service.py",)
DRAIN_TIMEOUT_S = 180.0
# Load sent at the same rate before a latency run and left out of it: a new service process and
# its first fetches, and a broker that has only drained backlogs so far, are not the steady state.
WARM_UP_S = 3.0
# The visible latency is taken on one partition's events: a sixth of them, picked by key hash,
# so a fair sample. Watching all six took 10-13% of the broker's core at 35,000 events/s, one
# takes 5-6%.
WATCHED_PARTITION = 0


@dataclass
class DrainResult:
    name: str
    events: int
    events_per_s: float
    cpu_s_per_10k: float
    peak_rss_mb: float
    instances: int = 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LatencyResult:
    name: str
    rate_per_s: float
    events: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    missing: int = 0
    # When a read_committed reader had the output (exactly once: after its transaction
    # committed) minus the input's Kafka timestamp.
    visible_p50_ms: float = 0.0
    visible_p99_ms: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "latencies_ms"}


def run_env(settings: Settings, base_env: dict[str, str], input_topic: str, guarantee: str, **extra: str) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    return {
        **base_env,
        "PROCESSING_GUARANTEE": guarantee,
        "INPUT_TOPIC": input_topic,
        "OUTPUT_TOPIC": f"bench-{run}-out",
        "DLQ_TOPIC": f"bench-{run}-dlq",
        "KAFKA_GROUP_ID": f"bench-{run}",
        "LOG_FORMAT": "json",
        # Two instances on one machine would want the same metrics port; the benchmark reads none.
        "METRICS_PORT": "0",
        **extra,
    }


async def new_backlog(settings: Settings, count: int, seed: int, distinct_users: bool = False) -> str:
    topic = f"bench-{uuid.uuid4().hex[:8]}-in"
    await create_topics(settings, topic)
    await load_backlog(settings, topic, events(count, USERS, seed, distinct_users))
    return topic


async def drain(
    name: str, program: Sequence[str], settings: Settings, env: dict[str, str], count: int, log_dir: Path, cores: Sequence[int | None],
) -> DrainResult:
    """Start the program (one process per core) on a loaded backlog and time it from its first output to its last."""
    output = env["OUTPUT_TOPIC"]
    await create_topics(settings, output, env["DLQ_TOPIC"])
    processes = [start_pinned(program, env, core, log_dir / f"{slug(name)}-{n}.log") for n, core in enumerate(cores)]
    try:
        cpu_at_first = None
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        done = before = 0
        while time.monotonic() < deadline:
            _check_alive(processes)
            done = await record_count(settings, output)
            if done and cpu_at_first is None:
                cpu_at_first = sum(p.cpu_s() for p in processes)
            # Offsets count transaction markers too, so the count may pass `count` early; done
            # once it also stands still.
            if done >= count and done == before:
                break
            before = done
            await asyncio.sleep(0.05)
        cpu = sum(p.cpu_s() for p in processes) - (cpu_at_first or 0.0)
        rss = max(p.peak_rss_mb() for p in processes)
    finally:
        for p in processes:
            p.stop()
    times = await read_times(settings, output, min(done, count))
    span_s = max((times.last_ms - times.first_ms) / 1000, 1e-3)
    return DrainResult(name, len(times.by_event), len(times.by_event) / span_s, cpu / max(done, 1) * 10_000, rss, len(cores))


async def steady_latency(
    name: str, settings: Settings, env: dict[str, str], rate: float, seconds: float, log_dir: Path, core: int | None,
) -> LatencyResult:
    """Hold `rate` events/s for `seconds` against a running, caught-up service, after WARM_UP_S of
    the same load that is not counted; latency is the output record's Kafka timestamp minus the
    input record's."""
    input_topic, output = env["INPUT_TOPIC"], env["OUTPUT_TOPIC"]
    await create_topics(settings, input_topic, output, env["DLQ_TOPIC"])
    service = start_pinned(SERVICE, env, core, log_dir / f"latency-{slug(name)}.log")
    try:
        await _wait_for_log(service, "partitions assigned", 60)
        await asyncio.sleep(1.0)  # let the first fetches settle
        # Made before the warm-up, so that the measured load follows it at once.
        load = list(events(int(rate * seconds), USERS, seed=int(rate)))
        warm_up = events(int(rate * WARM_UP_S), USERS, seed=int(rate) + 1)
        # Watching from the warm-up on: a reader started with the measured load saw its first
        # few hundred milliseconds late (visible p99 282 ms at 1,000/s, against an output p99 of 23).
        async with arrivals_watched(settings, output, WATCHED_PARTITION) as arrived:
            warmed = await send_paced(settings, input_topic, warm_up, rate, WARM_UP_S)
            warm_outputs = await read_times(settings, output, warmed, timeout_s=60)  # the service caught up
            await _watcher_caught_up(arrived, warm_outputs, timeout_s=30)
            sent = await send_paced(settings, input_topic, iter(load), rate, seconds)
            inputs = await read_times(settings, input_topic, warmed + sent)
            outputs = await read_times(settings, output, warmed + sent, timeout_s=60)
    finally:
        service.stop()
    measured = {event_id for _, _, event_id in load}
    sent_at = {e: t for e, t in inputs.by_event.items() if e in measured}
    latencies = sorted(outputs.by_event[e] - t for e, t in sent_at.items() if e in outputs.by_event)
    if not latencies:
        raise SystemExit(f"{name}: no predictions; see {service.log_path}")
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    arrival = outputs.arrivals(arrived)
    visible = sorted(arrival[e] - t for e, t in sent_at.items() if e in arrival)
    v = statistics.quantiles(visible, n=100, method="inclusive") if len(visible) > 1 else [float("nan")] * 99
    missing = sent - len(latencies)
    return LatencyResult(
        name, rate, len(latencies), q[49], q[94], q[98], latencies[-1], missing, v[49], v[98], [float(x) for x in latencies]
    )


def slug(name: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in name).split())


def _check_alive(processes: list[Pinned]) -> None:
    for p in processes:
        if p.process.poll() is not None:
            raise SystemExit(f"{p.log_path.name} exited with {p.process.returncode}; see {p.log_path}")


async def _watcher_caught_up(arrived: list[tuple[int, int, float]], outputs: TopicTimes, timeout_s: float) -> None:
    last = max((offset for partition, offset in outputs.positions.values() if partition == WATCHED_PARTITION), default=-1)
    deadline = time.monotonic() + timeout_s
    while not any(offset >= last for _, offset, _ in arrived):
        if time.monotonic() > deadline:
            raise SystemExit(f"the arrival watcher did not reach offset {last} of partition {WATCHED_PARTITION} in {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


async def _wait_for_log(process: Pinned, fragment: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while fragment not in process.log_path.read_text(errors="replace"):
        _check_alive([process])
        if time.monotonic() > deadline:
            raise SystemExit(f"no {fragment!r} in {process.log_path} after {timeout_s:.0f} s")
        await asyncio.sleep(0.1)
