"""What the quality monitor costs: labelled predictions per second on one core, and its memory at the cap.

    .venv/bin/python -m tools.bench.monitor_costs [--predictions 200000]    # `make benchmark` runs it too

Both runs start the real program, quality_monitor.py, pinned to one core, on topics of its own that are
filled beforehand with N predictions (one every 10 ms of event time, 10,000 users, each probability the
true chance of a purchase), the purchases that follow some of them, and a last purchase late enough in
event time that the watermark passes every prediction's window:
1. labelling: LABEL_WINDOW_S of 60 s, so about 6,000 predictions wait at a time, far below the cap, and
   none is sampled out. Timed from the monitor's "reading" log line to its last labelling (its own
   prediction_quality_last_label_time_seconds), once its /metrics shows all N labelled: reading,
   decoding, merging by event time, labelling and the window, with snapshots every 5 s as deployed;
2. at the cap: the same topics, QUALITY_MAX_PENDING = N and a label window longer than the whole set,
   so that every prediction stays pending: VmRSS once /metrics shows N pending and the watermark at
   the last record.
Run alone, the local stack's broker and MariaDB are not moved off the monitor's core (`make benchmark`
does that for all its runs), so the figures are noisier.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from config import Settings, load_settings
from events.purchase import Purchase, encode_purchase
from events.schema import Prediction, encode_key, encode_prediction
from quality.exporter import LABELLED_TOTAL, LAST_LABEL_TIME_SECONDS, PENDING, SAMPLED_OUT_TOTAL, WATERMARK_SECONDS
from tools.bench.bench_topics import create_topics, delete_topics, load_backlog
from tools.bench.processes import Pinned, start_pinned
from tools.bench.scenarios import _check_alive
from tools.chaos.tcp_proxy import free_port

MONITOR = ("quality_monitor.py",)
USERS = 10_000
SPACING = timedelta(milliseconds=10)
LABEL_WINDOW_S = 60
ALLOWANCE_S = 5
MODEL_VERSION = "benchmark-quality"
# Logged once the monitor is set up and starts reading: the start of the labelling run's clock.
READING_LOGGED = "; snapshots to "
STARTUP_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 180.0
SCRAPE_EVERY_S = 0.1
LOG_LOOKED_AT_EVERY_S = 0.01
MONITOR_CORE = 1


@dataclass(frozen=True)
class Outcomes:
    """The records the monitor reads, as (key, value, id) for tools.bench.bench_topics.load_backlog."""

    predictions: list[tuple[bytes, bytes, str]]
    purchases: list[tuple[bytes, bytes, str]]  # in event-time order, the closing one last
    first_event_time: datetime
    closing_time: datetime  # the last purchase's: every prediction's window has closed by then

    @property
    def span_s(self) -> float:
        return (self.closing_time - self.first_event_time).total_seconds()


@dataclass
class MonitorRun:
    name: str
    predictions: int
    labelled: int
    positive: int
    labelled_per_s: float | None
    cpu_s_per_10k: float | None  # per 10k labelled
    rss_mb: float  # VmRSS at the end of the run
    peak_rss_mb: float
    pending: int
    cap: int
    sampled_out: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Scrape:
    """What the monitor's /metrics says, summed over model versions."""

    labelled: int
    positive: int
    pending: int
    sampled_out: int
    watermark_s: float | None
    last_label_s: float | None


def synthetic_outcomes(count: int, seed: int = 11, now: datetime | None = None) -> Outcomes:
    """`count` predictions and their purchases, all in the past, so that each record's Kafka time follows its event time."""
    rng = random.Random(seed)
    first = (now or datetime.now(UTC)) - count * SPACING - timedelta(seconds=LABEL_WINDOW_S + 600)
    predictions, bought = [], []
    for n in range(count):
        at, user = first + n * SPACING, rng.randrange(USERS)
        probability = 1 / (1 + math.exp(2.2 - 0.45 * (user % 5) - rng.gauss(0, 0.6)))
        event_id = f"bench-quality-{n:08d}"
        prediction = Prediction(event_id, user, probability, MODEL_VERSION, at, at + timedelta(milliseconds=20))
        predictions.append((encode_key(user), encode_prediction(prediction), event_id))
        if rng.random() < probability:
            when = at + timedelta(microseconds=rng.randrange(1, LABEL_WINDOW_S * 1_000_000))
            bought.append(Purchase(f"bench-purchase-{n:08d}", user, round(rng.uniform(5, 200), 2), when))
    bought.sort(key=lambda purchase: purchase.timestamp)
    closing_time = first + (count - 1) * SPACING + timedelta(seconds=LABEL_WINDOW_S + ALLOWANCE_S + 1)
    # A user with no prediction: it moves the watermark and labels nothing positive.
    bought.append(Purchase("bench-purchase-closing", USERS, 1.0, closing_time))
    purchases = [(encode_key(p.user_id), encode_purchase(p), p.purchase_id) for p in bought]
    return Outcomes(predictions, purchases, first, closing_time)


def monitor_env(base_env: dict[str, str], output: str, purchases: str, quality: str, **extra: str) -> dict[str, str]:
    return {
        **base_env, "OUTPUT_TOPIC": output, "SHADOW_OUTPUT_TOPIC": "", "PURCHASES_TOPIC": purchases, "QUALITY_TOPIC": quality,
        "LABEL_WINDOW_S": str(LABEL_WINDOW_S), "LABEL_LATE_ALLOWANCE_S": str(ALLOWANCE_S),
        "METRICS_HOST": "127.0.0.1", "QUALITY_METRICS_PORT": str(free_port()), "LOG_FORMAT": "json", **extra,
    }


async def monitor_costs(
    settings: Settings, base_env: dict[str, str], outcomes: Outcomes, log_dir: Path, core: int | None,
) -> list[MonitorRun]:
    """The labelling run and the run at the cap, on topics of their own, deleted afterwards."""
    run = uuid.uuid4().hex[:8]
    output, purchases = f"bench-{run}-predictions", f"bench-{run}-purchases"
    quality = [f"bench-{run}-quality-labelling", f"bench-{run}-quality-cap"]
    try:
        await create_topics(settings, output, purchases)
        await load_backlog(settings, output, iter(outcomes.predictions))
        await load_backlog(settings, purchases, iter(outcomes.purchases))
        cap = str(len(outcomes.predictions))
        env = monitor_env(base_env, output, purchases, quality[0], QUALITY_MAX_PENDING=cap)
        labelling = await labelling_run(env, outcomes, log_dir, core)
        # Longer than from the first prediction to the closing purchase: not one prediction becomes due.
        never_due_s = math.ceil(outcomes.span_s) + LABEL_WINDOW_S
        env = monitor_env(base_env, output, purchases, quality[1], LABEL_WINDOW_S=str(never_due_s), QUALITY_MAX_PENDING=cap)
        at_cap = await cap_run(env, outcomes, log_dir, core)
    finally:
        await delete_topics(settings, [output, purchases, *quality])
    return [labelling, at_cap]


async def labelling_run(env: dict[str, str], outcomes: Outcomes, log_dir: Path, core: int | None) -> MonitorRun:
    count = len(outcomes.predictions)
    monitor = start_pinned(MONITOR, env, core, log_dir / "quality-monitor-labelling.log")
    try:
        started_s = await reading_started(monitor)
        cpu_at_start = monitor.cpu_s()
        done = await scraped_until(monitor, env, lambda s: s.labelled >= count and s.pending == 0, "every prediction labelled")
        cpu_s = monitor.cpu_s() - cpu_at_start
        rss, peak = monitor.rss_mb(), monitor.peak_rss_mb()
    finally:
        monitor.stop()
    assert done.last_label_s is not None  # labelled, so stamped
    span_s = max(done.last_label_s - started_s, 1e-3)
    return MonitorRun(
        f"quality monitor: labelling {count:,} predictions", count, done.labelled, done.positive, done.labelled / span_s,
        cpu_s / max(done.labelled, 1) * 10_000, rss, peak, done.pending, int(env["QUALITY_MAX_PENDING"]),
        done.sampled_out,
    )


async def cap_run(env: dict[str, str], outcomes: Outcomes, log_dir: Path, core: int | None) -> MonitorRun:
    cap = int(env["QUALITY_MAX_PENDING"])
    last_watermark_s = outcomes.closing_time.timestamp() - ALLOWANCE_S
    monitor = start_pinned(MONITOR, env, core, log_dir / "quality-monitor-at-the-cap.log")
    try:
        await reading_started(monitor)
        done = await scraped_until(
            monitor, env, lambda s: s.pending >= cap and s.watermark_s is not None and s.watermark_s >= last_watermark_s - 1e-3,
            f"{cap:,} pending and every record read",
        )
        rss, peak = monitor.rss_mb(), monitor.peak_rss_mb()
    finally:
        monitor.stop()
    return MonitorRun(
        f"quality monitor: {cap:,} pending, at its cap (QUALITY_MAX_PENDING)", len(outcomes.predictions), done.labelled,
        done.positive, None, None, rss, peak, done.pending, cap, done.sampled_out,
    )


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    labelled = positive = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == LABELLED_TOTAL:
                labelled += sample.value
                positive += sample.value if sample.labels.get("outcome") == "positive" else 0.0
            else:
                values[sample.name] = sample.value
    return Scrape(
        int(labelled), int(positive), int(values.get(PENDING, 0)), int(values.get(SAMPLED_OUT_TOTAL, 0)),
        values.get(WATERMARK_SECONDS), values.get(LAST_LABEL_TIME_SECONDS),
    )


async def scraped_until(monitor: Pinned, env: dict[str, str], done: Callable[[Scrape], bool], what: str) -> Scrape:
    """Scrape the monitor's /metrics until `done(scrape)`; stops the benchmark when it exits or takes too long."""
    port = int(env["QUALITY_METRICS_PORT"])
    deadline = time.monotonic() + RUN_TIMEOUT_S
    last: Scrape | None = None
    while True:
        _check_alive([monitor])
        with contextlib.suppress(OSError):  # the endpoint is not up yet, or busy: next time
            last = await asyncio.to_thread(scrape, port)
        if last is not None and done(last):
            return last
        if time.monotonic() > deadline:
            raise SystemExit(
                f"the quality monitor did not reach {what} in {RUN_TIMEOUT_S:.0f} s (last seen: {last}); see {monitor.log_path}"
            )
        await asyncio.sleep(SCRAPE_EVERY_S)


async def reading_started(monitor: Pinned) -> float:
    """Unix seconds (the monitor's own log time) at which it started reading the topics, once it has.

    Looked for every 10 ms, so that the CPU time read right after misses little of the labelling."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while (started_s := logged_at(monitor.log_path, READING_LOGGED)) is None:
        _check_alive([monitor])
        if time.monotonic() > deadline:
            raise SystemExit(f"no {READING_LOGGED!r} in {monitor.log_path} after {STARTUP_TIMEOUT_S:.0f} s")
        await asyncio.sleep(LOG_LOOKED_AT_EVERY_S)
    return started_s


def logged_at(log_path: Path, fragment: str) -> float | None:
    """Unix seconds of the first JSON log line whose message holds `fragment`; None while there is none."""
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and fragment in str(entry.get("message", "")):
            return datetime.fromisoformat(entry["time"]).timestamp()
    return None


def monitor_table(runs: list[MonitorRun]) -> str:
    lines = [
        "| Quality monitor (quality_monitor.py, one core) | predictions | labelled | labelled/s | CPU s per 10k labelled"
        " | RSS MB | peak RSS MB | pending / cap |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        rate = "-" if r.labelled_per_s is None else f"{r.labelled_per_s:,.0f}"
        cpu = "-" if r.cpu_s_per_10k is None else f"{r.cpu_s_per_10k:.2f}"
        lines.append(f"| {r.name} | {r.predictions:,} | {r.labelled:,} | {rate} | {cpu} | {r.rss_mb:.0f} | {r.peak_rss_mb:.0f}"
                     f" | {r.pending:,} / {r.cap:,} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    # The records are made and loaded, and /metrics read, off the monitor's core.
    others = set(range(os.cpu_count() or 1)) - {MONITOR_CORE}
    if others and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, others)
    settings = load_settings()
    log_dir = Path(args.log_dir)
    print(f"== quality monitor: {args.predictions:,} predictions, on core {MONITOR_CORE}", flush=True)
    runs = await monitor_costs(settings, {}, synthetic_outcomes(args.predictions), log_dir, MONITOR_CORE)
    print()
    print(monitor_table(runs))
    print(f"\nlogs in {log_dir}")


def command_line(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.monitor_costs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--predictions", type=predictions_count, default=200_000,
                        help="predictions labelled, and the cap of the second run (default 200000)")
    parser.add_argument("--log-dir", default=str(Path(__file__).resolve().parents[2] / ".stack" / "benchmark" / "logs"),
                        help="where the monitor's logs go (default .stack/benchmark/logs)")
    asyncio.run(main(parser.parse_args(argv)))


def predictions_count(text: str) -> int:
    value = int(text)
    if value < 100:
        raise argparse.ArgumentTypeError(f"{text} is below 100, the smallest QUALITY_MAX_PENDING")
    return value


if __name__ == "__main__":
    command_line()
