"""quality_monitor.py against the real broker, on topics of its own: its figures equal a recomputation from
the topics and the label rule, and a kill -9 and restart counts nothing twice and loses nothing.

The predictions and purchases are synthetic but honest: each probability comes from a known function of
the user and the event, and a purchase follows an event with that probability.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from config import Settings
from events.purchase import Purchase, decode_purchase, encode_purchase
from events.schema import InvalidEvent, Prediction, decode_prediction, encode_key, encode_prediction
from messaging.kafka_security import kafka_client_options
from model.calibration import expected_calibration_error
from quality.snapshot import QualitySnapshot, decode_snapshot
from tests.conftest import delete_topics, env_settings
from tests.integration.kafka_helpers import read_topic
from tests.integration.service_process import REPO_ROOT, ServiceProcess
from tools.chaos.tcp_proxy import free_port

pytestmark = pytest.mark.integration

LABEL_WINDOW_S, ALLOWANCE_S, QUALITY_WINDOW = 2, 1, 50
EVENTS, EVENT_SPACING_S, USERS = 600, 0.1, 40
# The first part is on the topics before the monitor starts; the rest is written while it runs, in slices of
# event time shorter than the allowance, so that a live reader never sees one topic ahead of another by more.
FIRST_PART_S, SLICE_S, KILL_AFTER_S = 30.0, 0.5, 40.0
TRAINING_AUCS = {"serving-1": 0.71, "serving-2": 0.74, "shadow-1": 0.69}
INVALID_PURCHASES = [b"{not json", b'{"purchase_id": "x", "user_id": -1, "amount": 3, "timestamp": "2026-12-05T17:00:00Z"}']
WAIT_S = 90.0


class MonitorProcess(ServiceProcess):
    """quality_monitor.py as a user starts it, with the helpers of the service's process."""

    def start(self) -> MonitorProcess:
        log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "quality_monitor.py", "--snapshot-interval-s", "0.5"], cwd=REPO_ROOT, env={**os.environ, **self.env},
            stdout=log_file, stderr=subprocess.STDOUT,
        )
        log_file.close()
        return self

    def metrics(self) -> dict[str, list]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.env['QUALITY_METRICS_PORT']}/metrics", timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, list] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append(sample)
        return samples


@dataclass(frozen=True)
class World:
    """What the test writes, each record with its event time (seconds after BASE)."""

    predictions: list[tuple[float, str, Prediction]]  # (time, topic role, prediction); repeats included
    purchases: list[tuple[float, bytes]]  # (time, record value), invalid ones included


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def synthetic_world(base: datetime, seed: int = 7) -> World:
    rng = random.Random(seed)
    predictions, purchases = [], []
    for i in range(EVENTS):
        seconds, user = i * EVENT_SPACING_S, rng.randrange(USERS)
        at = base + timedelta(seconds=seconds)
        # A known probability: users differ, and every third event is on a page that sells less.
        logit = -1.6 + 0.55 * (user % 6) - 0.9 * (i % 3 == 0)
        serving_version = "serving-1" if i < EVENTS * 3 // 4 else "serving-2"
        serving = Prediction(f"ev-{i:04d}", user, sigmoid(logit), serving_version, at, at + timedelta(milliseconds=30))
        shadow = Prediction(f"ev-{i:04d}", user, sigmoid(0.6 * logit - 0.4), "shadow-1", at, at + timedelta(milliseconds=30))
        predictions += [(seconds, "serving", serving), (seconds, "shadow", shadow)]
        if i % 37 == 0:  # at_least_once publishes the odd event twice
            predictions.append((seconds + 0.2, "serving", serving))
        if rng.random() < sigmoid(logit):
            bought = seconds + rng.uniform(0.05, LABEL_WINDOW_S - 0.05)
            purchases.append((bought, encode_purchase(Purchase(f"p-{i}", user, 19.5, base + timedelta(seconds=bought)))))
    for k, value in enumerate(INVALID_PURCHASES):
        purchases.append((5.0 + k, value))
    return World(predictions, purchases)


@dataclass(frozen=True)
class Topics:
    output: str
    shadow: str
    purchases: str
    quality: str


class Writer:
    """Writes the world's records in event-time order, a slice at a time, each slice acknowledged before the next."""

    def __init__(self, settings: Settings, topics: Topics, world: World, base: datetime) -> None:
        self.settings, self.topics, self.base = settings, topics, base
        records = [(s, 0, self.topic(role), encode_key(p.user_id), encode_prediction(p)) for s, role, p in world.predictions]
        records += [(s, 1, topics.purchases, b"1", value) for s, value in world.purchases]
        self.records = sorted(records, key=lambda r: (r[0], r[1]))
        self.written = 0

    def topic(self, role: str) -> str:
        return self.topics.output if role == "serving" else self.topics.shadow

    async def write_until(self, until_s: float, pace_s: float = 0.0) -> None:
        settings = self.settings
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", **kafka_client_options(settings))
        await producer.start()
        try:
            while self.written < len(self.records) and self.records[self.written][0] < until_s:
                slice_end = self.records[self.written][0] + SLICE_S
                batch = []
                while self.written < len(self.records) and self.records[self.written][0] < min(slice_end, until_s):
                    _s, _kind, topic, key, value = self.records[self.written]
                    batch.append(await producer.send(topic, value, key))
                    self.written += 1
                await asyncio.gather(*batch)
                await asyncio.sleep(pace_s)
        finally:
            await producer.stop()


async def wait_for_snapshot(
    settings: Settings, topic: str, condition: Callable[[QualitySnapshot], bool], timeout_s: float = WAIT_S
) -> QualitySnapshot:
    """The first snapshot on `topic`, from its beginning, that meets `condition`."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None, auto_offset_reset="earliest",
                                **kafka_client_options(settings))
    await consumer.start()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    snapshot = decode_snapshot(record.value)
                    if condition(snapshot):
                        return snapshot
    finally:
        await consumer.stop()
    raise AssertionError(f"no snapshot on {topic} met the condition within {timeout_s} s")


def seconds_after(base: datetime, moment: datetime | None) -> float:
    return -math.inf if moment is None else (moment - base).total_seconds()


@dataclass(frozen=True)
class Expected:
    labelled: int
    positive: int
    window: int
    auc: float
    log_loss: float
    brier: float
    ece: float
    positive_rate: float


def recompute(predictions: list[tuple[str, Prediction]], purchases: list[Purchase], watermark: datetime) -> dict[tuple[str, str], Expected]:
    """The label rule applied to what the topics hold: each (role, event) once, labelled when its window closed
    by `watermark`; the window is the last QUALITY_WINDOW labelled, in (event time, event id) order."""
    window = timedelta(seconds=LABEL_WINDOW_S)
    bought: dict[int, list[datetime]] = {}
    for purchase in purchases:
        bought.setdefault(purchase.user_id, []).append(purchase.timestamp)
    unique = {(role, p.event_id): (role, p) for role, p in predictions}
    due = sorted((p.timestamp, p.event_id, role, p) for role, p in unique.values() if p.timestamp + window <= watermark)
    per_model: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for at, _event_id, role, p in due:
        label = int(any(at < when <= at + window for when in bought.get(p.user_id, [])))
        per_model.setdefault((p.model_version, role), []).append((label, p.purchase_probability))
    expected = {}
    for key, rows in per_model.items():
        last = rows[-QUALITY_WINDOW:]
        y = np.array([label for label, _p in last])
        probabilities = np.array([probability for _label, probability in last])
        expected[key] = Expected(
            labelled=len(rows), positive=sum(label for label, _p in rows), window=len(last), auc=roc_auc_score(y, probabilities),
            log_loss=log_loss(y, probabilities, labels=[0, 1]), brier=brier_score_loss(y, probabilities),
            ece=expected_calibration_error(y, probabilities),
            positive_rate=float(y.mean()),
        )
    return expected


def registry_with(root: Path, versions: dict[str, float]) -> Path:
    for version, auc in versions.items():
        directory = root / "versions" / version
        directory.mkdir(parents=True)
        (directory / "model.json").write_text(json.dumps({"version": version, "metrics": {"roc_auc": auc}}))
    return root


@pytest.fixture
def monitor_env(stack_settings, tmp_path) -> Iterator[dict[str, str]]:
    run = uuid.uuid4().hex[:8]
    serving = {v: a for v, a in TRAINING_AUCS.items() if v.startswith("serving")}
    env = {
        "INPUT_TOPIC": f"it-{run}-input", "OUTPUT_TOPIC": f"it-{run}-output", "DLQ_TOPIC": f"it-{run}-dlq",
        "SHADOW_OUTPUT_TOPIC": f"it-{run}-shadow", "PURCHASES_TOPIC": f"it-{run}-purchases", "QUALITY_TOPIC": f"it-{run}-quality",
        "MODEL_URI": str(registry_with(tmp_path / "serving", serving)),
        "SHADOW_MODEL_URI": str(registry_with(tmp_path / "shadow", {"shadow-1": TRAINING_AUCS["shadow-1"]})),
        "TOPIC_PARTITIONS": "3", "LABEL_WINDOW_S": str(LABEL_WINDOW_S), "LABEL_LATE_ALLOWANCE_S": str(ALLOWANCE_S),
        "QUALITY_WINDOW": str(QUALITY_WINDOW), "QUALITY_METRICS_PORT": str(free_port()), "METRICS_HOST": "127.0.0.1",
        "LOG_FORMAT": "json", "RETRY_BACKOFF_MAX_MS": "1000",
    }
    yield env
    topics = [env[name] for name in ("INPUT_TOPIC", "OUTPUT_TOPIC", "DLQ_TOPIC", "SHADOW_OUTPUT_TOPIC", "PURCHASES_TOPIC", "QUALITY_TOPIC")]
    asyncio.run(delete_topics(stack_settings, topics))


@pytest.fixture
def start_monitor(monitor_env, tmp_path) -> Iterator[Callable[[], MonitorProcess]]:
    started: list[MonitorProcess] = []

    def start() -> MonitorProcess:
        monitor = MonitorProcess(monitor_env, tmp_path / f"monitor-{len(started)}.log").start()
        started.append(monitor)
        return monitor

    yield start
    for monitor in started:
        if monitor.alive:
            monitor.kill()


async def test_the_figures_match_the_label_rule_and_a_kill_9_counts_nothing_twice(monitor_env, start_monitor):
    settings = env_settings(**monitor_env)
    topics = Topics(settings.output_topic, settings.shadow_output_topic, settings.purchases_topic, settings.quality_topic)
    # In the past, so every record's Kafka timestamp (when it is written) comes after its event time, as in life.
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    world = synthetic_world(base)
    writer = Writer(settings, topics, world, base)

    await writer.write_until(FIRST_PART_S)
    first = start_monitor()
    # Once the backlog is read, the rest arrives live, and the kill comes while it does.
    await wait_for_snapshot(settings, topics.quality, lambda s: seconds_after(base, s.watermark) >= FIRST_PART_S - ALLOWANCE_S - 1)
    writing = asyncio.create_task(writer.write_until(math.inf, pace_s=0.1))
    before_kill = await wait_for_snapshot(settings, topics.quality, lambda s: seconds_after(base, s.watermark) >= KILL_AFTER_S)
    first.kill()  # kill -9 while records keep coming: whatever it counted after its last snapshot is lost with it
    assert not writing.done(), "the kill must come while records are still being written"
    await writing
    end_s = writer.records[-1][0]
    await writer_sentinel(settings, topics, base, end_s + LABEL_WINDOW_S + ALLOWANCE_S + 1)

    second = start_monitor()
    final_watermark = base + timedelta(seconds=end_s + LABEL_WINDOW_S)
    done = await wait_for_snapshot(
        settings, topics.quality,
        lambda s: s.watermark is not None and s.watermark >= final_watermark and s.pending == 0
        and all(m.training_auc is not None for m in s.models) and len(s.models) == 3,
    )
    scraped = second.metrics()
    assert second.stop() == 0, second.tail()
    assert any("read again up to the snapshot's positions" in m for m in second.messages()), second.tail()

    predictions = await read_back_predictions(settings, topics)
    purchases = await read_back_purchases(settings, topics)
    assert len(predictions) == sum(1 for _ in world.predictions) and len(purchases) == len(world.purchases) - len(INVALID_PURCHASES) + 1
    assert done.watermark is not None
    expected = recompute(predictions, purchases, done.watermark)
    assert sum(m.labelled for m in before_kill.models) < sum(e.labelled for e in expected.values())
    assert {(m.model_version, m.role) for m in done.models} == set(expected)
    for model in done.models:
        want = expected[(model.model_version, model.role)]
        assert (model.labelled, model.labelled_positive, model.window) == (want.labelled, want.positive, want.window), model
        for figure in ("auc", "log_loss", "brier", "ece", "positive_rate"):
            assert getattr(model, figure) == pytest.approx(getattr(want, figure), abs=1e-6), (figure, model)
        assert model.training_auc == TRAINING_AUCS[model.model_version]
    assert (done.invalid_purchases, done.late_purchases, done.late_predictions, done.sampled_out) == (len(INVALID_PURCHASES), 0, 0, 0)

    labelled_total = {(s.labels["model_version"], s.labels["role"], s.labels["outcome"]): s.value
                      for s in scraped["prediction_quality_labelled_total"]}
    for (version, role), want in expected.items():
        assert labelled_total[(version, role, "positive")] == want.positive
        assert labelled_total[(version, role, "negative")] == want.labelled - want.positive
    assert scraped["prediction_quality_invalid_purchases_total"][0].value == len(INVALID_PURCHASES)


async def writer_sentinel(settings: Settings, topics: Topics, base: datetime, seconds: float) -> None:
    """A purchase of a user with no prediction, late enough in event time to close every window."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", **kafka_client_options(settings))
    await producer.start()
    try:
        sentinel = Purchase("sentinel", 10_000, 1.0, base + timedelta(seconds=seconds))
        await producer.send_and_wait(topics.purchases, encode_purchase(sentinel), b"10000")
    finally:
        await producer.stop()


def at_least(count: int) -> Callable[[list], bool]:
    return lambda records: len(records) >= count


async def read_back_predictions(settings: Settings, topics: Topics) -> list[tuple[str, Prediction]]:
    found = []
    for topic, role in ((topics.output, "serving"), (topics.shadow, "shadow")):
        expected = EVENTS + (EVENTS // 37 + 1 if role == "serving" else 0)
        records = await read_topic(settings, topic, at_least(expected), timeout_s=WAIT_S)
        found += [(role, decode_prediction(r.value)) for r in records]
    return found


async def read_back_purchases(settings: Settings, topics: Topics) -> list[Purchase]:
    records = await read_topic(settings, topics.purchases, lambda rs: any(r.key == b"10000" for r in rs), timeout_s=WAIT_S)
    purchases = []
    for record in records:
        try:
            purchases.append(decode_purchase(record.value))
        except InvalidEvent:
            continue
    return purchases
