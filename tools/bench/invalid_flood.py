"""What a flood of invalid input costs: a steady rate with a share of invalid events, against all-valid input.

    .venv/bin/python -m tools.bench.invalid_flood [--repeats 3] [--seconds 15] [--invalid-share 0.2]

Each mode runs at about half its peak (the benchmark's drain, `make benchmark`): all-valid and
with the invalid share, side by side, `--repeats` times in turn, so that drift on a shared
machine hits both alike. The service runs pinned to one core (`taskset -c 1`) with the local
stack's broker and MariaDB kept off it, as in the benchmark. The store and model are the
benchmark's (.stack/benchmark/, made by `make benchmark`, or by this module if missing or if
the model there no longer loads). It prints every run, then per mode the median of each and the
spread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from pathlib import Path

from config import load_settings
from model.artifact import ModelArtifactError, load_model
from tools.bench.bench_topics import delete_topics
from tools.bench.flood import FloodResult, steady_flood
from tools.bench.processes import stack_kept_off
from tools.bench.run import AT_LEAST_ONCE, EXACTLY_ONCE, MODEL_FILE, OUT_DIR, SERVICE_CORE, create_database, prepare
from tools.bench.scenarios import run_env

# About half of each mode's peak on the benchmark's machine (2 cores; 55,000 and 38,000 events/s).
HALF_PEAK = {AT_LEAST_ONCE: 26_000.0, EXACTLY_ONCE: 19_000.0}


async def main(args: argparse.Namespace) -> None:
    others = set(range(os.cpu_count() or 1)) - {SERVICE_CORE}
    if others and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, others)  # the load generator and the readers stay off the service's core
    settings = load_settings()
    database = f"{settings.mysql_database}_benchmark"
    base = {"MYSQL_DATABASE": database, "MODEL_URI": str(MODEL_FILE)}
    if not servable(MODEL_FILE):
        await create_database(settings, database)
        prepare(base)
    rates = {AT_LEAST_ONCE: args.rate_at_least_once, EXACTLY_ONCE: args.rate_exactly_once}
    results: list[FloodResult] = []
    topics: list[str] = []
    try:
        with stack_kept_off(SERVICE_CORE):
            for repeat in range(args.repeats):
                for guarantee in args.modes:
                    for share in (0.0, args.invalid_share):
                        name = f"{guarantee}, {share:.0%} invalid, run {repeat + 1}"
                        print(f"== {name} at {rates[guarantee]:,.0f} events/s", flush=True)
                        env = run_env(settings, base, f"bench-flood-{time.time_ns()}-in", guarantee)
                        topics += [env["INPUT_TOPIC"], env["OUTPUT_TOPIC"], env["DLQ_TOPIC"]]
                        result = await steady_flood(
                            name, settings, env, rates[guarantee], args.seconds, share, OUT_DIR / "logs", SERVICE_CORE
                        )
                        print(f"   {row(result)}", flush=True)
                        results.append(result)
    finally:
        with contextlib.suppress(Exception):
            await delete_topics(settings, topics)
    print()
    print(table(results, args.modes, args.invalid_share))


def servable(model_file: Path) -> bool:
    """Whether the benchmark's model would load in the service; one from an older `make benchmark`
    (no checksum, another scikit-learn, another feature contract) is trained again."""
    if not model_file.exists():
        return False
    try:
        load_model(model_file)
    except ModelArtifactError as exc:
        print(f"== training the benchmark's model again: {exc}", flush=True)
        return False
    return True


def row(r: FloodResult) -> str:
    return (f"{r.handled:,}/{r.events:,} handled, {r.events_per_s:,.0f} events/s, CPU {r.cpu_share:.0%} of the core"
            f" ({r.cpu_s_per_10k:.2f} s per 10k), p50 {r.p50_ms:.0f} ms, p99 {r.p99_ms:.0f} ms")


def table(results: list[FloodResult], modes: list[str], invalid_share: float) -> str:
    lines = [
        "| mode | invalid | rate/s | events/s (median, min–max) | CPU of the core (median, min–max) | CPU s per 10k | p99 ms (median) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for guarantee in modes:
        medians = {}
        for share in (0.0, invalid_share):
            runs = [r for r in results if r.name.startswith(f"{guarantee},") and r.invalid_share == share]
            if not runs:
                continue
            rates = [r.events_per_s for r in runs]
            cpu = [r.cpu_share for r in runs]
            medians[share] = statistics.median(rates)
            lines.append(
                f"| {guarantee} | {share:.0%} | {runs[0].rate_per_s:,.0f} | {medians[share]:,.0f} ({min(rates):,.0f}–{max(rates):,.0f})"
                f" | {statistics.median(cpu):.0%} ({min(cpu):.0%}–{max(cpu):.0%})"
                f" | {statistics.median(r.cpu_s_per_10k for r in runs):.2f} | {statistics.median(r.p99_ms for r in runs):.0f} |"
            )
        if len(medians) == 2 and medians[0.0]:
            ratios.append(f"- {guarantee}: {invalid_share:.0%} invalid ÷ all valid = {100 * medians[invalid_share] / medians[0.0]:.1f}%")
    return "\n".join([*lines, "", *ratios])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mode and mix, taken in turn (default 3)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each measured load (default 15)")
    parser.add_argument("--invalid-share", type=float, default=0.2, help="share of invalid events in the flood (default 0.2)")
    parser.add_argument("--rate-at-least-once", type=float, default=HALF_PEAK[AT_LEAST_ONCE], help="events/s for at_least_once")
    parser.add_argument("--rate-exactly-once", type=float, default=HALF_PEAK[EXACTLY_ONCE], help="events/s for exactly_once")
    parser.add_argument("--modes", nargs="+", default=[AT_LEAST_ONCE, EXACTLY_ONCE], choices=[AT_LEAST_ONCE, EXACTLY_ONCE])
    asyncio.run(main(parser.parse_args()))
