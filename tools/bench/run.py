"""Benchmark the prediction service against its baselines on the local Kafka and MySQL, in one run.

    make benchmark        # or: .venv/bin/python -m tools.bench [--events 200000] [--quick]

Every program under test runs as its own process pinned to one core (`taskset -c 1`), on
fresh topics with its own consumer group; the local stack's broker and MariaDB are kept off
that core meanwhile (restored at the end), as if they ran on other machines:
1. the seed's per-message design (tools/bench/seed_baseline.py), on a small backlog, it is slow;
2. the pass-through ceiling (tools/bench/passthrough.py): consume and produce, no work;
3. the service draining the same backlog, at least once and exactly once; then two instances
   in one group, one core each, in each mode; then, at least once, serving a
   hist_gradient_boosting model (through predict_proba), and with a shadow model scored beside
   the serving one, without and with SHADOW_OUTPUT_TOPIC;
4. the service's latency at a steady 1,000 events/s and at half its measured peak, in each
   mode, after a few seconds of the same load that are not counted; latency is the output
   record's Kafka timestamp minus the input record's, and, as "visible", when a read_committed
   reader had the output minus the input's timestamp (on one output partition's events);
5. the service's peak memory (exactly once) draining 1,000,000 events from 1,000,000 distinct users, with the
   store in memory and again with a per-user cache smaller than the store (every user a miss);
6. the quality monitor (tools/bench/monitor_costs.py): labelled predictions per second on one core,
   end to end, and its resident memory with QUALITY_MAX_PENDING predictions waiting for their label.
It loads its own offline store (database `<MYSQL_DATABASE>_benchmark`) and trains its own model
into one file, .stack/benchmark/model.joblib (MODEL_URI), so a service that may be running keeps
its model and data. It prints
one table and writes results.json and results.png beside the logs in .stack/benchmark/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

from config import Settings, load_settings
from tools.bench.bench_report import table, write_chart, write_json
from tools.bench.bench_topics import delete_topics
from tools.bench.model_costs import scoring_us_per_event
from tools.bench.monitor_costs import monitor_costs, predictions_count, synthetic_outcomes
from tools.bench.processes import stack_kept_off
from tools.bench.scenarios import SERVICE, drain, new_backlog, run_env, steady_latency

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / ".stack" / "benchmark"
# Single model files, not a registry: the benchmark serves the models it trained.
MODEL_FILE = OUT_DIR / "model.joblib"
HGB_MODEL_FILE = OUT_DIR / "model-hist_gradient_boosting.joblib"
HGB = "hist_gradient_boosting"
SERVICE_CORE = 1
AT_LEAST_ONCE, EXACTLY_ONCE = "at_least_once", "exactly_once"
# Below the benchmark store's 8,500 users with history, so the cache works per user.
PER_USER_CACHE = 5_000
# The baselines, started as modules from the project folder, as the service is started as its script.
SEED_BASELINE = ("-m", "tools.bench.seed_baseline")
PASSTHROUGH = ("-m", "tools.bench.passthrough")


def prepare(env: dict[str, str]) -> None:
    """Load the benchmark's own store and train its own models, with the project's own commands."""
    for command, extra in (
        (["offline_store.loader"], {}),
        (["model.train"], {}),
        (["model.train", "--estimator", HGB], {"MODEL_URI": str(HGB_MODEL_FILE)}),
    ):
        print(f"== {' '.join(command)}", flush=True)
        subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env={**os.environ, **env, "LOG_FORMAT": "console", **extra},
                       check=True)


async def create_database(settings: Settings, name: str) -> None:
    import aiomysql

    from offline_store.mysql import mysql_ssl_context

    conn = await aiomysql.connect(host=settings.mysql_host, port=settings.mysql_port, user=settings.mysql_user,
                                  password=settings.mysql_password, autocommit=True, ssl=mysql_ssl_context(settings))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "database exists" on every run but the first
            async with conn.cursor() as cursor:
                await cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")
    finally:
        conn.close()


async def main(args: argparse.Namespace) -> None:
    # The load generator and the readers stay off the service's core.
    others = set(range(os.cpu_count() or 1)) - {SERVICE_CORE}
    if others and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, others)
    settings = load_settings()
    database = f"{settings.mysql_database}_benchmark"
    await create_database(settings, database)
    base = {"MYSQL_DATABASE": database, "MODEL_URI": str(MODEL_FILE)}
    prepare(base)
    logs = OUT_DIR / "logs"
    shutil.rmtree(logs, ignore_errors=True)  # this run's logs only
    topics: list[str] = []
    drains, latencies = [], []
    started = time.monotonic()
    off_core = contextlib.ExitStack()
    try:
        moved = off_core.enter_context(stack_kept_off(SERVICE_CORE))
        if moved:
            print(f"== the local stack's broker and MariaDB kept off core {SERVICE_CORE} until the end", flush=True)
        print("== seed baseline", flush=True)
        seed_topic = await new_backlog(settings, args.seed_events, seed=1)
        env = run_env(settings, base, seed_topic, AT_LEAST_ONCE)
        topics += [seed_topic, env["OUTPUT_TOPIC"], env["DLQ_TOPIC"]]
        seed = await drain("seed per-message design", SEED_BASELINE, settings, env, args.seed_events, logs, [SERVICE_CORE])
        drains.append(seed)

        print(f"== backlog of {args.events:,} events", flush=True)
        backlog = await new_backlog(settings, args.events, seed=2)
        topics.append(backlog)
        for name, program, guarantee, cores in (
            ("pass-through ceiling", PASSTHROUGH, AT_LEAST_ONCE, [SERVICE_CORE]),
            (f"prediction service, {AT_LEAST_ONCE}", SERVICE, AT_LEAST_ONCE, [SERVICE_CORE]),
            (f"prediction service, {EXACTLY_ONCE}", SERVICE, EXACTLY_ONCE, [SERVICE_CORE]),
            (f"prediction service, {AT_LEAST_ONCE}, 2 instances", SERVICE, AT_LEAST_ONCE, [0, 1]),
            (f"prediction service, {EXACTLY_ONCE}, 2 instances", SERVICE, EXACTLY_ONCE, [0, 1]),
        ):
            print(f"== {name}", flush=True)
            env = run_env(settings, base, backlog, guarantee)
            topics += [env["OUTPUT_TOPIC"], env["DLQ_TOPIC"]]
            drains.append(await drain(name, program, settings, env, args.events, logs, cores))
        models = {}
        for name, extra in (
            (f"prediction service, {AT_LEAST_ONCE}, {HGB}", {"MODEL_URI": str(HGB_MODEL_FILE)}),
            (f"prediction service, {AT_LEAST_ONCE}, shadow model", {"SHADOW_MODEL_URI": str(MODEL_FILE)}),
            (f"prediction service, {AT_LEAST_ONCE}, shadow model with its topic",
             {"SHADOW_MODEL_URI": str(MODEL_FILE), "SHADOW_OUTPUT_TOPIC": f"bench-{time.time_ns()}-shadow"}),
        ):
            print(f"== {name}", flush=True)
            env = run_env(settings, base, backlog, AT_LEAST_ONCE, **extra)
            topics += [env["OUTPUT_TOPIC"], env["DLQ_TOPIC"], *([env["SHADOW_OUTPUT_TOPIC"]] if "SHADOW_OUTPUT_TOPIC" in env else [])]
            models[name] = await drain(name, SERVICE, settings, env, args.events, logs, [SERVICE_CORE])
            drains.append(models[name])

        for guarantee, peak in ((AT_LEAST_ONCE, drains[2].events_per_s), (EXACTLY_ONCE, drains[3].events_per_s)):
            for rate in (1_000.0, round(peak / 2, -2)):
                print(f"== latency at {rate:,.0f} events/s, {guarantee}", flush=True)
                env = run_env(settings, base, f"bench-lat-{int(rate)}-{time.time_ns()}-in", guarantee)
                topics += [env["INPUT_TOPIC"], env["OUTPUT_TOPIC"], env["DLQ_TOPIC"]]
                name = f"at {rate:,.0f}/s, {guarantee}"
                latencies.append(await steady_latency(name, settings, env, rate, args.seconds, logs, SERVICE_CORE))

        print(f"== quality monitor: {args.quality_predictions:,} predictions, labelled, then pending at the cap", flush=True)
        monitor = await monitor_costs(settings, base, synthetic_outcomes(args.quality_predictions), logs, SERVICE_CORE)

        if not args.quick:
            print(f"== memory: {args.memory_events:,} events from as many distinct users", flush=True)
            big = await new_backlog(settings, args.memory_events, seed=3, distinct_users=True)
            env = run_env(settings, base, big, EXACTLY_ONCE)
            topics += [big, env["OUTPUT_TOPIC"], env["DLQ_TOPIC"]]
            name = f"prediction service, {EXACTLY_ONCE}, {args.memory_events:,} distinct users"
            drains.append(await drain(name, SERVICE, settings, env, args.memory_events, logs, [SERVICE_CORE]))
            # Again with a cache smaller than the store, so every user is a miss fetched from
            # MySQL and the per-user cache has to stay within its bound.
            env = run_env(settings, base, big, EXACTLY_ONCE, FEATURE_CACHE_MAX_USERS=str(PER_USER_CACHE))
            topics += [env["OUTPUT_TOPIC"], env["DLQ_TOPIC"]]
            name = f"{name}, per-user cache of {PER_USER_CACHE:,}"
            drains.append(await drain(name, SERVICE, settings, env, args.memory_events, logs, [SERVICE_CORE]))
    finally:
        off_core.close()
        await delete_topics(settings, topics)

    seed, ceiling, at_least_once, exactly_once = drains[:4]
    hgb, shadow, shadow_topic = models.values()
    logistic_us, hgb_us = scoring_us_per_event(MODEL_FILE), scoring_us_per_event(HGB_MODEL_FILE)
    ratios = {
        f"{AT_LEAST_ONCE} ÷ pass-through ceiling (%)": 100 * at_least_once.events_per_s / ceiling.events_per_s,
        f"{AT_LEAST_ONCE} ÷ seed per-message design (×)": at_least_once.events_per_s / seed.events_per_s,
        f"{EXACTLY_ONCE} ÷ pass-through ceiling (%)": 100 * exactly_once.events_per_s / ceiling.events_per_s,
        f"{EXACTLY_ONCE} ÷ seed per-message design (×)": exactly_once.events_per_s / seed.events_per_s,
        f"{EXACTLY_ONCE} ÷ {AT_LEAST_ONCE} (%)": 100 * exactly_once.events_per_s / at_least_once.events_per_s,
        f"{HGB}, {AT_LEAST_ONCE} (events/s on one core)": hgb.events_per_s,
        f"{HGB} scoring alone (µs per event, in process)": hgb_us,
        "logistic_regression scoring alone (µs per event, in process)": logistic_us,
        # CPU seconds per 10k events, times 100, is CPU µs per event.
        "shadow model: CPU added (µs per event)": 100 * (shadow.cpu_s_per_10k - at_least_once.cpu_s_per_10k),
        "shadow model with its topic: CPU added (µs per event)": 100 * (shadow_topic.cpu_s_per_10k - at_least_once.cpu_s_per_10k),
    }
    context = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "cores": os.cpu_count(), "service_core": SERVICE_CORE,
        "kafka": settings.kafka_bootstrap_servers, "backlog_events": args.events, "seconds": round(time.monotonic() - started),
        "stack_kept_off_service_core": bool(moved),
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    write_json(OUT_DIR / "results.json", drains, latencies, ratios, context, monitor)
    write_chart(OUT_DIR / "results.png", drains, latencies)
    print()
    print(table(drains, latencies, ratios, monitor))
    print(f"\nwritten: {OUT_DIR / 'results.json'}, {OUT_DIR / 'results.png'}; logs in {logs}")


def command_line(argv: list[str] | None = None) -> None:
    """`python -m tools.bench`: parse the flags and run the whole benchmark."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="backlog drained by the ceiling and the service (default 200000)")
    parser.add_argument("--seed-events", type=int, default=1_000, help="backlog for the slow seed design (default 1000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each steady-rate latency run (default 20)")
    parser.add_argument("--memory-events", type=int, default=1_000_000, help="events (distinct users) for the memory run (default 1000000)")
    parser.add_argument("--quality-predictions", type=predictions_count, default=200_000,
                        help="predictions the quality monitor labels, and its QUALITY_MAX_PENDING in the run at the cap (default 200000)")
    parser.add_argument("--quick", action="store_true", help="skip the memory run")
    asyncio.run(main(parser.parse_args(argv)))
