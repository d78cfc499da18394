"""One run of the scenario for one processing guarantee: fresh topics and group, three instances,
the load and the faults together, the catch-up, then the verdict."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from aiokafka.errors import KafkaError

from config import Settings, load_settings
from model.artifact import load_model
from offline_store.mysql import MySQLFeatureStore, close_pool, create_pool
from tools.chaos.attribution import by_fault
from tools.chaos.chaos_topics import create_topics, group_lag, read_all
from tools.chaos.faults import HEARTBEAT_INTERVAL_MS, INSTANCES, SESSION_TIMEOUT_MS, FaultRecord, Timeline, run_timeline
from tools.chaos.instances import Fleet
from tools.chaos.load import LoadReport, PlannedEvent, make_plan, send_paced
from tools.chaos.progress_lines import Reporter
from tools.chaos.secured_kafka import PRODUCER, SERVICE, grant, pipeline_acls
from tools.chaos.stack import ChaosStack
from tools.chaos.verdict import Verdict, expected_probabilities, judge

PROGRESS_INTERVAL_S = 5.0
JOIN_TIMEOUT_S = 120.0
SHUTDOWN_TIMEOUT_S = 10
# The catch-up gives up when the group's lag has not shrunk for this long, or at the bound.
CATCH_UP_STALL_S = 60.0
CATCH_UP_MAX_S = 240.0
READ_TIMEOUT_S = 120.0


@dataclass
class ScenarioOptions:
    events: int
    rate_per_s: float
    timeline: Timeline
    seed: int = 1


@dataclass
class ScenarioResult:
    guarantee: str
    verdict: Verdict
    load: LoadReport
    faults: list[FaultRecord]
    crashes: list[dict[str, Any]]
    caught_up: bool
    seconds: dict[str, float] = field(default_factory=dict)
    logins: list[str] = field(default_factory=list)  # how the instances reached Kafka, as they logged it

    def trouble_by_fault(self) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Duplicated and missing records per fault they were sent nearest to, and those near none."""
        duplicated, duplicated_elsewhere = by_fault(self.verdict.duplicated_sent_at, self.faults)
        missing, missing_elsewhere = by_fault(self.verdict.missing_sent_at, self.faults)
        per_fault = [
            {**asdict(fault), "duplicated_near": d, "missing_near": m}
            for fault, d, m in zip(self.faults, duplicated, missing, strict=True)
        ]
        return per_fault, {"duplicated": duplicated_elsewhere, "missing": missing_elsewhere}

    def as_dict(self) -> dict[str, Any]:
        verdict = {k: v for k, v in asdict(self.verdict).items() if not k.endswith("_sent_at")}
        faults, elsewhere = self.trouble_by_fault()
        return {
            "guarantee": self.guarantee, "passed": self.verdict.passed, **verdict,
            "load": {**asdict(self.load), "failures": dict(self.load.failures)},
            "faults": faults, "records_near_no_fault": elsewhere, "crashes": self.crashes, "caught_up": self.caught_up,
            "seconds": self.seconds, "logins": self.logins,
        }


def instance_env(stack: ChaosStack, guarantee: str, run: str) -> dict[str, str]:
    return {
        **stack.env(principal=SERVICE),
        "PROCESSING_GUARANTEE": guarantee,
        "INPUT_TOPIC": f"chaos-{run}-input",
        "OUTPUT_TOPIC": f"chaos-{run}-output",
        "DLQ_TOPIC": f"chaos-{run}-dlq",
        "KAFKA_GROUP_ID": f"chaos-{run}",
        "TOPIC_PARTITIONS": "6",
        # A frozen instance is evicted within seconds, so the zombie comes back to a moved group.
        "KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "KAFKA_HEARTBEAT_INTERVAL_MS": str(HEARTBEAT_INTERVAL_MS),
        "SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
        # Recover within a couple of seconds of a dependency coming back, not up to ten.
        "RETRY_BACKOFF_MAX_MS": "2000",
        "METRICS_PORT": "0",
        "LOG_FORMAT": "json",
        "STATS_INTERVAL_S": "5",
    }


async def run_scenario(stack: ChaosStack, guarantee: str, options: ScenarioOptions) -> ScenarioResult:
    reporter = Reporter(guarantee)
    run = uuid.uuid4().hex[:6]
    env = instance_env(stack, guarantee, run)
    # The harness's own view (topics, lag, verdict); the load logs in as the producer on a secured listener.
    settings = load_settings(environ={**os.environ, **env, **stack.env()})
    load_as = load_settings(environ={**os.environ, **env, **stack.env(principal=PRODUCER)})
    log_dir = stack.directory / f"{guarantee}-{run}"
    log_dir.mkdir(parents=True)
    seconds: dict[str, float] = {}
    await create_topics(settings)
    if stack.secured is not None:
        outputs = (settings.output_topic, settings.dlq_topic)
        await grant(stack.kafka.bootstrap_servers, pipeline_acls(settings.input_topic, outputs, settings.kafka_group_id))
    plan = make_plan(run, options.events, stack.users, options.seed)
    reporter.say(f"{len(plan):,} events planned ({sum(e.pages is None for e in plan):,} invalid), {options.rate_per_s:,.0f}/s;"
                 f" {INSTANCES} instances, logs in {log_dir}")
    fleet = Fleet(env, log_dir, SHUTDOWN_TIMEOUT_S)
    load = LoadReport(len(plan))
    try:
        for slot in range(INSTANCES):
            fleet.start(slot)
        await fleet.wait_joined(JOIN_TIMEOUT_S)
        seconds["start_instances"] = round(reporter.elapsed_s(), 1)
        reporter.say("all instances joined the group; load and faults start")
        watching = asyncio.create_task(_watch(fleet, load, reporter))
        try:
            started = time.monotonic()
            async with asyncio.TaskGroup() as both:
                both.create_task(send_paced(load_as, settings.input_topic, plan, options.rate_per_s, load,
                                            reporter.say))
                timeline = both.create_task(run_timeline(options.timeline, fleet, stack, reporter))
            seconds["load_and_faults"] = round(time.monotonic() - started, 1)
            reporter.say(f"load done: {load.delivered:,} of {load.planned:,} delivered in {load.seconds:.0f} s; faults over")
            started = time.monotonic()
            caught_up = await _catch_up(settings, reporter)
            seconds["catch_up"] = round(time.monotonic() - started, 1)
        finally:
            watching.cancel()
        codes = await asyncio.gather(*(fleet.stop(slot) for slot in sorted(fleet.live)))
        reporter.say(f"instances stopped (exit codes {list(codes)})")
    finally:
        fleet.kill_all()
    started = time.monotonic()
    verdict = await _judge(stack, settings, guarantee, plan, reporter)
    seconds["verdict"] = round(time.monotonic() - started, 1)
    seconds["total"] = round(reporter.elapsed_s(), 1)
    crashes = [{"slot": c.slot, "exit_code": c.exit_code, "log": str(c.log_path)} for c in fleet.crashes]
    logins = sorted({login for instance in fleet.started if (login := instance.login())})
    return ScenarioResult(guarantee, verdict, load, timeline.result(), crashes, caught_up, seconds, logins)


async def _watch(fleet: Fleet, load: LoadReport, reporter: Reporter) -> None:
    """Progress every few seconds, and any instance that died by itself started again (and counted)."""
    last_report, last_sent = time.monotonic(), 0
    while True:
        await asyncio.sleep(1.0)
        for crash in fleet.restart_crashed():
            reporter.say(f"instance {crash.slot} exited by itself with code {crash.exit_code} (see {crash.log_path}); started again")
        now = time.monotonic()
        if now - last_report >= PROGRESS_INTERVAL_S and last_sent < load.planned:
            rate = (load.sent - last_sent) / (now - last_report)
            reporter.say(f"sent {load.sent:,}/{load.planned:,} ({rate:,.0f}/s), acknowledged {load.delivered:,}")
            last_report, last_sent = now, load.sent


async def _catch_up(settings: Settings, reporter: Reporter) -> bool:
    """Wait until the group has committed every input record; False if it stalls or runs out of time."""
    started = last_progress = time.monotonic()
    best: int | None = None
    while time.monotonic() - started < CATCH_UP_MAX_S and time.monotonic() - last_progress < CATCH_UP_STALL_S:
        try:
            lag = await group_lag(settings)
        except (KafkaError, OSError, TimeoutError) as exc:
            reporter.say(f"catching up: cannot read the group's offsets yet ({type(exc).__name__})")
            await asyncio.sleep(2.0)
            continue
        if lag == 0:
            reporter.say("caught up: the group has committed every input record")
            return True
        if best is None or lag < best:
            best, last_progress = lag, time.monotonic()
        reporter.say(f"catching up: {lag:,} input records not committed yet")
        await asyncio.sleep(2.0)
    left = "an unknown number of" if best is None else f"{best:,}"
    reporter.say(f"NOT caught up: {left} input records still uncommitted; judging what is there")
    return False


async def _judge(stack: ChaosStack, settings: Settings, guarantee: str, plan: list[PlannedEvent], reporter: Reporter) -> Verdict:
    reporter.say("reading the input, output and dead-letter topics (read_committed)")
    inputs = await read_all(settings, settings.input_topic, READ_TIMEOUT_S)
    outputs = await read_all(settings, settings.output_topic, READ_TIMEOUT_S)
    dead_letters = await read_all(settings, settings.dlq_topic, READ_TIMEOUT_S)
    reporter.say(f"read {len(inputs):,} input records, {len(outputs):,} predictions, {len(dead_letters):,} dead letters;"
                 " recomputing every probability offline")
    model = load_model(stack.model_path)
    # Straight to MySQL, not through the proxy, and with the same rows the services read.
    direct = load_settings(environ={**os.environ, **stack.env(through_proxy=False)})
    pool = await create_pool(direct)
    try:
        features = await MySQLFeatureStore(pool, 60_000).get_all_features()
    finally:
        await close_pool(pool)
    expected = await asyncio.to_thread(expected_probabilities, plan, model, features)
    return judge(guarantee, plan, expected, model.version, inputs, outputs, dead_letters)
