"""Benchmark the real prediction service (a separate process) against the local Kafka and MySQL.

    make benchmark                      # trains first, then runs this with the defaults
    .venv/bin/python scripts/benchmark.py [--events 20000] [--rate 200] [--seconds 15] [--batch-max-records N]

1. Throughput: --events events are pre-loaded while the service is stopped; then it starts and
   drains them. Rate = events predicted between its first and last prediction / that time.
2. Latency: with the service running and caught up, events are produced at --rate per second for
   --seconds; end-to-end latency percentiles are reported as seen by a consumer and by the service.

Each run uses its own topics (deleted at the end) and consumer group (aiokafka cannot delete
groups; Kafka expires it), so demo data is never touched.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python scripts/benchmark.py`: make the project importable

from aiokafka import AIOKafkaConsumer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402

from config import ConfigError, Settings, load_settings  # noqa: E402
from events.schema import Prediction, decode_prediction  # noqa: E402
from messaging.event_producer import TrafficPlan, produce_events  # noqa: E402
from messaging.topics import ensure_topics, pipeline_topics  # noqa: E402

SERVICE_LOG = ROOT / ".stack" / "logs" / "benchmark-service.log"
THROUGHPUT_TIMEOUT_S = 90.0  # bounds scenario 1 even if the service is far slower than expected
DRAIN_TIMEOUT_S = 30.0  # how long scenario 2 waits for stragglers after the last event is sent
USERS = 10_000  # the loader's user ids, as producer.py uses them


class OutputReader:
    """Reads the output topic from its start in the background, noting when each prediction arrived."""

    def __init__(self, settings: Settings) -> None:
        self.arrivals: dict[str, tuple[datetime, Prediction]] = {}
        self._consumer = AIOKafkaConsumer(
            settings.output_topic, bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=None, auto_offset_reset="earliest",  # a bystander: it must not join the service's group
        )

    async def run(self) -> None:
        await self._consumer.start()
        try:
            while True:
                batches = await self._consumer.getmany(timeout_ms=100)
                received = datetime.now(UTC)  # one clock reading per fetch: its records arrived together
                for records in batches.values():
                    for record in records:
                        prediction = decode_prediction(record.value)
                        # At least once: a replayed prediction keeps its first arrival time.
                        self.arrivals.setdefault(prediction.event_id, (received, prediction))
        finally:
            await self._consumer.stop()

    async def wait_for(self, event_ids: list[str], service: subprocess.Popen, timeout_s: float) -> int:
        """Wait until every id has a prediction (or the timeout); returns how many are missing."""
        deadline = time.monotonic() + timeout_s
        while (missing := sum(i not in self.arrivals for i in event_ids)) and time.monotonic() < deadline:
            if service.poll() is not None:
                sys.exit(f"the service exited with {service.returncode}; see {SERVICE_LOG}")
            await asyncio.sleep(0.05)
        return missing


def start_service(env: dict[str, str]) -> subprocess.Popen:
    SERVICE_LOG.parent.mkdir(parents=True, exist_ok=True)
    with SERVICE_LOG.open("wb") as log:
        # Own session: Ctrl-C reaches only this script, which then stops the service with one SIGTERM.
        return subprocess.Popen([sys.executable, "prediction_service.py"], cwd=ROOT, env={**os.environ, **env},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_service(service: subprocess.Popen) -> None:
    if service.poll() is None:
        service.terminate()  # graceful: finishes and commits the batch in hand
        try:
            service.wait(timeout=20)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


async def delete_topics(settings: Settings) -> None:
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            await admin.delete_topics(list(pipeline_topics(settings)))
        finally:
            await admin.close()
    except Exception as exc:  # noqa: BLE001 - best effort: the numbers are already printed
        print(f"could not delete the benchmark topics: {exc!r}")


def ms(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() * 1000


def rate_row(times: list[datetime]) -> str:
    # Times are stamped once per batch (predicted_at) or per fetch (arrival): the events stamped
    # with the first time were done at, not after, the start of the span, so they do not count.
    span_s = (times[-1] - times[0]).total_seconds()
    return f"{span_s:.2f} s  ->  {(len(times) - times.count(times[0])) / span_s:,.0f} events/s"


def percentile_row(label: str, values: list[float]) -> str:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return f"  {label:<34}{q[49]:>8.1f}{q[94]:>8.1f}{q[98]:>8.1f}{max(values):>8.1f}"


async def benchmark(args: argparse.Namespace, env: dict[str, str], settings: Settings) -> None:
    service = reader_task = None
    reader = OutputReader(settings)
    try:
        await ensure_topics(settings, pipeline_topics(settings))
        # Scenario 1: a backlog waiting for a cold service, like a restart after an outage.
        # Traffic as producer.py sends it by default: 2% of events from users unknown to the store.
        preload = await produce_events(settings, TrafficPlan(args.events, 0, 1, 0.0, USERS, 0.02, keep_event_ids=True))
        print(f"pre-loaded {preload.valid} events in {preload.seconds:.1f} s; starting the service")
        reader_task = asyncio.create_task(reader.run())
        started = datetime.now(UTC)
        service = start_service(env)
        missing = await reader.wait_for(preload.event_ids, service, THROUGHPUT_TIMEOUT_S)
        drained = [reader.arrivals[i] for i in preload.event_ids if i in reader.arrivals]
        if len(drained) < 2:
            sys.exit(f"only {len(drained)} predictions after {THROUGHPUT_TIMEOUT_S:.0f} s; see {SERVICE_LOG}")
        predicted = sorted(p.predicted_at for _, p in drained)
        arrived = sorted(received for received, _ in drained)
        batches = len(set(predicted))

        # Scenario 2: the service is caught up; a steady stream measures the latency it adds.
        steady = await produce_events(settings, TrafficPlan(args.rate * args.seconds, args.rate, 2, 0.0, USERS, 0.02, keep_event_ids=True))
        late = await reader.wait_for(steady.event_ids, service, DRAIN_TIMEOUT_S)
        seen = [reader.arrivals[i] for i in steady.event_ids if i in reader.arrivals]
        to_consumer = [ms(received, p.timestamp) for received, p in seen]
        to_service = [ms(p.predicted_at, p.timestamp) for _, p in seen]

        print(f"\n== throughput: {args.events} events pre-loaded, then the service started")
        timed_out = f" ({missing} missing after {THROUGHPUT_TIMEOUT_S:.0f} s)" if missing else ""
        print(f"  predictions received              {len(drained)}{timed_out}")
        print(f"  first -> last predicted_at        {rate_row(predicted)}")
        print(f"  first -> last arrival (consumer)  {rate_row(arrived)}")
        print(f"  batches (distinct predicted_at)   {batches}, {len(drained) / batches:.0f} events each on average")
        print(f"  process start -> first prediction {(predicted[0] - started).total_seconds():.2f} s (imports, model load, group join)")
        print(f"\n== latency: {args.rate} events/s for {args.seconds} s ({steady.valid} sent in {steady.seconds:.1f} s), service caught up")
        print(f"  {'milliseconds':<34}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}")
        if len(seen) >= 2:
            print(percentile_row("consumer receive - event timestamp", to_consumer))
            print(percentile_row("predicted_at - event timestamp", to_service))
        if late:
            print(f"  {late} of {steady.valid} events had no prediction {DRAIN_TIMEOUT_S:.0f} s after the last was sent")
    finally:
        # Runs on errors and on Ctrl-C too (asyncio.run cancels this task): never leave the service behind.
        if service is not None:
            stop_service(service)
        if reader_task is not None:
            reader_task.cancel()
            await asyncio.gather(reader_task, return_exceptions=True)
        await delete_topics(settings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="events pre-loaded for the throughput run (default 20000)")
    parser.add_argument("--rate", type=int, default=200, help="events per second in the latency run (default 200)")
    parser.add_argument("--seconds", type=int, default=15, help="length of the latency run (default 15)")
    parser.add_argument("--batch-max-records", type=int, help="BATCH_MAX_RECORDS for the service (default: its own)")
    args = parser.parse_args()
    if args.events < 2 or args.rate < 1 or args.seconds < 1:
        parser.error("--events must be at least 2, --rate and --seconds at least 1")

    run = f"bench-{uuid.uuid4().hex[:8]}"
    env = {"INPUT_TOPIC": f"{run}-input", "OUTPUT_TOPIC": f"{run}-output", "DLQ_TOPIC": f"{run}-dlq",
           "KAFKA_GROUP_ID": f"{run}-service", "LOG_FORMAT": "json"}
    if args.batch_max_records is not None:
        env["BATCH_MAX_RECORDS"] = str(args.batch_max_records)
    # A fresh topic can answer the first sends with NotLeaderForPartition for a moment; aiokafka
    # retries them and logs a warning each time, which would only clutter the report.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    try:
        settings = load_settings(environ={**os.environ, **env})  # what the service will read, .env included
    except ConfigError as exc:
        parser.error(str(exc))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; Kafka {settings.kafka_bootstrap_servers},"
          f" {settings.topic_partitions} partitions; MySQL {settings.mysql_host}:{settings.mysql_port}/{settings.mysql_database}")
    print(f"service: BATCH_MAX_RECORDS {settings.batch_max_records}, POLL_TIMEOUT_MS {settings.poll_timeout_ms};"
          f" topics {run}-*; log {SERVICE_LOG}")
    try:
        asyncio.run(benchmark(args, env, settings))
    except KeyboardInterrupt:
        print("interrupted; the service was stopped")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
