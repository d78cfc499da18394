"""A flood of invalid input at a steady rate: what it costs the service against all-valid input.

The load is the benchmark's steady-rate load (kcat, paced), with a share of the events made
invalid (a user id that is not a number, so each becomes a dead letter that still carries its
event id). Throughput is the events handled (predicted or dead-lettered, as a read_committed
reader sees them) over the time from the first measured input to the last output: at a rate
the service keeps up with, it is the rate itself; when it falls behind, it drops.
"""

from __future__ import annotations

import random
import re
import statistics
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from config import Settings
from tools.bench.bench_topics import create_topics, events, read_times
from tools.bench.kcat import send_paced
from tools.bench.processes import start_pinned
from tools.bench.scenarios import SERVICE, USERS, WARM_UP_S, _wait_for_log, slug

_USER_ID = re.compile(rb'"user_id":-?\d+')
INVALID_USER_ID = b'"user_id":"not-a-number"'


@dataclass
class FloodResult:
    name: str
    rate_per_s: float
    invalid_share: float
    events: int
    handled: int
    events_per_s: float
    cpu_share: float  # of the service's core, from the first measured input to the last output
    cpu_s_per_10k: float
    p50_ms: float
    p99_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mixed_events(count: int, seed: int, invalid_share: float) -> Iterator[tuple[bytes, bytes, str]]:
    """The benchmark's events, with about `invalid_share` of them invalid (picked at random, seeded)."""
    rng = random.Random(seed + 1_000_003)
    for key, value, event_id in events(count, USERS, seed):
        if rng.random() < invalid_share:
            value = _USER_ID.sub(INVALID_USER_ID, value, count=1)
        yield key, value, event_id


async def steady_flood(
    name: str, settings: Settings, env: dict[str, str], rate: float, seconds: float, invalid_share: float,
    log_dir: Path, core: int | None,
) -> FloodResult:
    """Hold `rate` events/s for `seconds`, `invalid_share` of them invalid, against a running,
    warmed-up service, and measure what came out of it."""
    input_topic, output, dlq = env["INPUT_TOPIC"], env["OUTPUT_TOPIC"], env["DLQ_TOPIC"]
    await create_topics(settings, input_topic, output, dlq)
    service = start_pinned(SERVICE, env, core, log_dir / f"flood-{slug(name)}.log")
    try:
        await _wait_for_log(service, "partitions assigned", 60)
        warm_up = list(mixed_events(int(rate * WARM_UP_S), seed=int(rate) + 1, invalid_share=invalid_share))
        load = list(mixed_events(int(rate * seconds), seed=int(rate), invalid_share=invalid_share))
        warm_invalid = sum(INVALID_USER_ID in value for _, value, _ in warm_up)
        load_invalid = sum(INVALID_USER_ID in value for _, value, _ in load)
        warmed = await send_paced(settings, input_topic, iter(warm_up), rate, WARM_UP_S)
        await read_times(settings, output, warmed - warm_invalid, timeout_s=60)  # caught up
        await read_times(settings, dlq, warm_invalid, timeout_s=60)
        cpu_before = service.cpu_s()
        sent = await send_paced(settings, input_topic, iter(load), rate, seconds)
        predicted = await read_times(settings, output, warmed + sent - warm_invalid - load_invalid, timeout_s=120)
        dead = await read_times(settings, dlq, warm_invalid + load_invalid, timeout_s=120)
        cpu_s = service.cpu_s() - cpu_before  # the reading above finds it idle
        inputs = await read_times(settings, input_topic, warmed + sent)
    finally:
        service.stop()
    measured = {event_id for _, _, event_id in load}
    out_at = {**predicted.by_event, **dead.by_event}
    handled = {e: out_at[e] for e in measured if e in out_at}
    if not handled:
        raise SystemExit(f"{name}: no outputs; see {service.log_path}")
    first_in = min(inputs.by_event[e] for e in measured if e in inputs.by_event)
    span_s = max((max(handled.values()) - first_in) / 1000, 1e-3)
    latencies = sorted(t - inputs.by_event[e] for e, t in handled.items() if e in inputs.by_event)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return FloodResult(
        name, rate, invalid_share, sent, len(handled), len(handled) / span_s, cpu_s / span_s, cpu_s / max(sent, 1) * 10_000,
        q[49], q[98],
    )
