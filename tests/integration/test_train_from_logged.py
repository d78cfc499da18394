"""`python -m model.train --from-logged` on the real MariaDB and Kafka: features as of each event, and whole runs.

Each test has its own database (prediction_logged_*), and the runs their own topics and registry.
The served history is honest: events of users with a real purchase history, each bought after (or
not) with model/ground_truth.py's probability of its features at that moment, the purchases it
caused feeding the features of the user's later events. A user's events lie more than a label
window apart, so each label is the event's own draw.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sklearn
from aiokafka import AIOKafkaProducer
from sklearn.metrics import roc_auc_score

from config import Settings
from events.schema import InputEvent, Prediction, encode_event, encode_key, encode_prediction
from events.synthetic import new_event_id, random_pages
from features.contract import PAGE_COLUMNS, FeatureContract
from features.inputs import feature_frame
from features.user import UserFeatures
from messaging.kafka_security import kafka_client_options
from model.artifact import ARTIFACT_FILE, PurchaseModel, load_model, save_model
from model.calibration import expected_calibration_error
from model.dataset import make_labelled_data
from model.estimators import build_pipeline
from model.evaluation import train_and_evaluate
from model.ground_truth import true_purchase_probability
from model.local_registry import LocalRegistry
from offline_store.history import generate_history
from offline_store.loader import create_schema, replace_history
from offline_store.mysql import close_pool, create_pool
from offline_store.point_in_time import ServedEventRows, point_in_time
from tests.conftest import delete_topics, env_settings, server_sql
from tests.factories import save_trained
from tests.integration.kafka_helpers import create_topic
from tests.integration.service_process import REPO_ROOT

pytestmark = pytest.mark.integration

WINDOW_S = 1_800
ALLOWANCE_S = 60
USERS = 300
COLD_USERS = 30  # ids USERS..USERS+COLD_USERS-1: no history, their first events are cold starts
SEED = 20
# The served period: within the broker's retention, and over well before now.
SERVED_DAYS = 3.0
LOOSE_GATES = ["--max-auc-gap", "0.05", "--max-ece", "0.06"]  # a few thousand events: the gates' sampling noise
RUN_TIMEOUT_S = 180


@pytest.fixture
def own_database(stack_settings) -> Iterator[Settings]:
    name = f"prediction_logged_{uuid.uuid4().hex[:8]}"
    asyncio.run(server_sql(stack_settings, f"CREATE DATABASE `{name}`"))
    try:
        yield env_settings(MYSQL_DATABASE=name)
    finally:
        asyncio.run(server_sql(stack_settings, f"DROP DATABASE IF EXISTS `{name}`"))


async def write_purchases(settings: Settings, purchases: Sequence[tuple[int, float, datetime]], history=None) -> None:
    """The schema, the history (when given) and `purchases` (user, amount, UTC time) in the test's database."""
    pool = await create_pool(settings)
    try:
        async with pool.acquire() as conn:
            await create_schema(conn)
            if history is not None:
                await replace_history(conn, history)
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO purchases (user_id, amount, purchased_at) VALUES (%s, %s, %s)",
                    [(user, Decimal(f"{amount:.2f}"), moment.astimezone(UTC).replace(tzinfo=None)) for user, amount, moment in purchases],
                )
    finally:
        await close_pool(pool)


async def features_as_of(settings: Settings, events: Sequence[tuple[int, datetime]], closed_before: datetime):
    pool = await create_pool(settings)
    try:
        rows = ServedEventRows(np.array([user for user, _ in events], dtype=np.int64), [moment for _, moment in events])
        return await point_in_time(pool, rows, WINDOW_S, closed_before)
    finally:
        await close_pool(pool)


def test_a_purchase_one_second_after_an_event_labels_it_and_never_reaches_its_features(own_database):
    t = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
    second = timedelta(seconds=1)
    asyncio.run(write_purchases(own_database, [
        # User 1: three older purchases, one a second before the event, one a second after it.
        (1, 40.0, t - timedelta(days=50)), (1, 30.0, t - timedelta(days=10)), (1, 20.0, t - timedelta(days=1)),
        (1, 10.0, t - second), (1, 1000.0, t + second),
        # User 2: nothing before the event, a purchase a second after it.
        (2, 55.0, t + second),
        # User 3: a purchase a second before, nothing after.
        (3, 70.0, t - second),
        # User 4: a purchase just past the window; user 5 one at its very end; user 6 one at the event's own moment.
        (4, 15.0, t + timedelta(seconds=WINDOW_S) + second), (5, 25.0, t + timedelta(seconds=WINDOW_S)), (6, 35.0, t),
    ]))
    events = [(1, t), (1, t + 2 * second), (2, t), (3, t), (4, t), (5, t), (6, t), (7, t),
              (1, t + timedelta(hours=1))]  # its window ends after the horizon below: not labelled yet
    found = asyncio.run(features_as_of(own_database, events, closed_before=t + timedelta(minutes=40)))

    assert found.labelled.tolist() == [True] * 8 + [False]
    # User 1 at t: the purchase a second before is the newest of the last three; the one a second after is not there.
    assert found.purchase_count[0] == 4
    assert found.mean_last_3_purchases[0] == pytest.approx((10 + 20 + 30) / 3)
    assert found.last_purchase_at_s[0] == (t - second).timestamp()
    assert found.labels[0] == 1
    # Two seconds after t, that purchase has happened: it is now part of the user's features.
    assert found.purchase_count[1] == 5
    assert found.mean_last_3_purchases[1] == pytest.approx((1000 + 10 + 20) / 3)
    assert found.last_purchase_at_s[1] == (t + second).timestamp()
    assert found.labels[1] == 0
    # User 2 had bought nothing by t (a cold start), and bought a second later.
    assert (found.purchase_count[2], np.isnan(found.last_purchase_at_s[2]), found.labels[2]) == (0, True, 1)
    # User 3: the purchase a second before counts, and nothing follows.
    assert (found.purchase_count[3], found.mean_last_3_purchases[3], found.labels[3]) == (1, 70.0, 0)
    # The window is (t, t + LABEL_WINDOW_S]: one second past it is out, its last second in, the event's own moment a feature.
    assert (found.purchase_count[4], found.labels[4]) == (0, 0)
    assert (found.purchase_count[5], found.labels[5]) == (0, 1)
    assert (found.purchase_count[6], found.last_purchase_at_s[6], found.labels[6]) == (1, t.timestamp(), 0)
    # User 7 never bought.
    assert (found.purchase_count[7], found.labels[7]) == (0, 0)


# -- whole runs on a served history ---------------------------------------------------------------


@dataclass
class World:
    """A served history drawn from the ground truth, and what is true of it by construction."""

    start: datetime
    history: Any  # offline_store.history.PurchaseHistory, before `start`
    events: list[tuple[str, int, datetime, tuple[str, str, str]]] = field(default_factory=list)  # id, user, time, pages
    purchases: list[tuple[int, float, datetime]] = field(default_factory=list)  # the ones the events led to
    features_at_start: dict[int, UserFeatures] = field(default_factory=dict)

    @property
    def horizon(self) -> datetime:
        return max(moment for _, _, moment in self.purchases) - timedelta(seconds=ALLOWANCE_S)

    def labelled_count(self) -> int:
        return sum(moment + timedelta(seconds=WINDOW_S) <= self.horizon for _, _, moment, _ in self.events)


def simulate(start: datetime, seed: int = SEED) -> World:
    rng, draws = random.Random(seed), np.random.default_rng(seed)
    history = generate_history(USERS, as_of=start.replace(tzinfo=None), seed=seed)
    bought: dict[int, list[tuple[float, float]]] = {user: [] for user in range(USERS + COLD_USERS)}
    for user, amount, moment in zip(history.user_ids.tolist(), history.amounts.tolist(), history.purchased_at, strict=True):
        bought[user].append((moment.replace(tzinfo=UTC).timestamp(), amount))
    for purchases in bought.values():
        purchases.sort()
    world = World(start=start, history=history)
    world.features_at_start = {user: f for user in bought if (f := features_at(bought[user], start.timestamp())) is not None}
    # Each user's events: more than a label window apart, so no purchase falls in two events' windows.
    end_s = start.timestamp() + SERVED_DAYS * 86_400
    times: dict[int, list[float]] = {}
    for user in bought:
        at_s, times[user] = start.timestamp() + float(draws.uniform(0, 6 * 3_600)), []
        while at_s < end_s:
            times[user].append(float(round(at_s)))
            at_s += 1.5 * WINDOW_S + float(draws.exponential(4.5 * 3_600))
    contract = FeatureContract()
    # Round k draws every user's k-th event at once: it depends only on that user's earlier purchases.
    for k in range(max(len(user_times) for user_times in times.values())):
        batch = [(user, user_times[k]) for user, user_times in times.items() if len(user_times) > k]
        users = [features_at(bought[user], at_s) for user, at_s in batch]
        pages = [random_pages(rng) for _ in batch]
        probability = true_purchase_probability(feature_frame(contract, pages, users, [at_s for _, at_s in batch]))
        for (user, at_s), page, p in zip(batch, pages, probability.tolist(), strict=True):
            world.events.append((new_event_id(rng), user, datetime.fromtimestamp(at_s, UTC), page))
            if draws.random() < p:
                at = at_s + int(draws.integers(1, WINDOW_S + 1))
                usual = np.mean([amount for _, amount in bought[user]]) if bought[user] else float(draws.lognormal(3.6, 0.7))
                amount = max(round(float(usual * draws.lognormal(0.0, 0.35)), 2), 0.5)
                bought[user].append((at, amount))
                world.purchases.append((user, amount, datetime.fromtimestamp(at, UTC)))
    world.events.sort(key=lambda event: (event[2], event[0]))
    return world


def features_at(purchases: list[tuple[float, float]], moment_s: float) -> UserFeatures | None:
    """The feature definition, independently of SQL: purchases at or before the moment."""
    past = sorted((at, amount) for at, amount in purchases if at <= moment_s)
    if not past:
        return None
    return UserFeatures(float(np.mean([amount for _, amount in past[-3:]])), len(past), past[-1][0], False)


@dataclass
class Served:
    world: World
    settings: Settings
    env: dict[str, str]
    since: datetime
    serving_version: str
    duplicates: int


DUPLICATES = 30
UNPREDICTED = 40
INVALID = ["not json", '{"event_id": "x"}', '{"event_id": "y", "user_id": -1, "timestamp": "2026-01-01T00:00:00Z",'
           ' "last_three_pages_visited": ["home", "home", "home"]}']


def pages_only_model(world: World, directory: Path) -> Path:
    """A model that knows only the pages: trained (with gates loose enough for it) on synthetic events like model.train's."""
    data = make_labelled_data(FeatureContract(), world.features_at_start, USERS, 20_000, SEED, world.start.timestamp())
    trained = train_and_evaluate(data, SEED, "logistic_regression", FeatureContract(features=PAGE_COLUMNS),
                                 {"max_auc_gap_to_oracle": 0.5, "max_ece": 0.1})
    path = directory / ARTIFACT_FILE
    save_trained(trained, path)
    return path


def oracle_model(world: World, directory: Path) -> Path:
    """The best this model family can be: fitted to the true probabilities themselves (each event twice, as a
    purchase weighted p and as none weighted 1 - p), which it represents all but exactly."""
    contract = FeatureContract()
    data = make_labelled_data(contract, world.features_at_start, USERS, 20_000, SEED + 1, world.start.timestamp())
    both = pd.concat([data.features, data.features], ignore_index=True)
    outcome = np.r_[np.ones(len(data.labels)), np.zeros(len(data.labels))]
    weight = np.r_[data.true_probability, 1 - data.true_probability]
    pipeline = build_pipeline(contract).fit(both, outcome, classifier__sample_weight=weight)
    predicted = pipeline.predict_proba(data.features)[:, 1]
    metrics = {"roc_auc": float(roc_auc_score(data.labels, predicted)),
               "oracle_roc_auc": float(roc_auc_score(data.labels, data.true_probability)),
               "ece": expected_calibration_error(data.labels, predicted)}
    version = "20261101T000000Z-oracle0000"
    model = PurchaseModel(pipeline, version, "logistic_regression", sklearn.__version__, contract)
    path = directory / ARTIFACT_FILE
    save_model(model, path, {"version": version, "estimator": "logistic_regression", "sklearn_version": sklearn.__version__,
                             "contract": contract.to_dict(), "metrics": metrics,
                             "gates": {"max_auc_gap_to_oracle": 0.02, "max_ece": 0.02}, "trained_at": "2026-11-01T00:00:00+00:00"})
    return path


async def produce(settings: Settings, topic: str, records: Sequence[tuple[bytes, bytes, datetime]]) -> None:
    """Records with the Kafka timestamps given: the served history happened days ago."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=20,
                                **kafka_client_options(settings))
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key, timestamp_ms=int(moment.timestamp() * 1000)) for key, value, moment in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def served_records(world: World, serving, version: str) -> tuple[list, list]:
    """(input records, output records): the period's events and predictions, with what a real stream holds besides."""
    rng = random.Random(SEED + 2)
    users = [world.features_at_start.get(user) for _, user, _, _ in world.events]
    probabilities = serving.predict([pages for *_, pages in world.events], users, [moment.timestamp() for _, _, moment, _ in world.events])
    inputs, outputs = [], []
    for (event_id, user, moment, pages), p in zip(world.events, probabilities.tolist(), strict=True):
        inputs.append((encode_key(user), encode_event(InputEvent(event_id, user, moment, pages)), moment))
        predicted_at = moment + timedelta(milliseconds=50)
        outputs.append((encode_key(user), encode_prediction(Prediction(event_id, user, p, version, moment, predicted_at)), predicted_at))
    end = world.events[-1][2]
    for _ in range(UNPREDICTED):  # events the service had not got to, or never will
        user = rng.randrange(USERS)
        inputs.append((encode_key(user), encode_event(InputEvent(new_event_id(rng), user, end, random_pages(rng))), end))
    inputs.extend((b"0", raw.encode(), end) for raw in INVALID)
    for event_id, user, moment, _ in rng.sample(world.events, DUPLICATES):  # replayed after a crash, by another version
        outputs.append((encode_key(user), encode_prediction(Prediction(event_id, user, 0.5, "replayed", moment, end)), end))
    return inputs, outputs


def older_records(world: World) -> tuple[list, list]:
    """A day before the range read: must not be trained on."""
    rng = random.Random(SEED + 3)
    moment = world.start - timedelta(days=1)
    inputs, outputs = [], []
    for _ in range(20):
        event_id, user = new_event_id(rng), rng.randrange(USERS)
        inputs.append((encode_key(user), encode_event(InputEvent(event_id, user, moment, random_pages(rng))), moment))
        outputs.append((encode_key(user), encode_prediction(Prediction(event_id, user, 0.1, "old", moment, moment)), moment))
    return inputs, outputs


@pytest.fixture(scope="module")
def served(stack_settings, tmp_path_factory) -> Iterator[Served]:
    """One served history for the module's runs: topics, a database, and the model that served it."""
    run = uuid.uuid4().hex[:8]
    name = f"prediction_logged_{run}"
    env = {"INPUT_TOPIC": f"it-{run}-logged-input", "OUTPUT_TOPIC": f"it-{run}-logged-output", "DLQ_TOPIC": f"it-{run}-logged-dlq",
           "MYSQL_DATABASE": name, "LABEL_WINDOW_S": str(WINDOW_S), "LABEL_LATE_ALLOWANCE_S": str(ALLOWANCE_S)}
    settings = env_settings(**env)
    start = (datetime.now(UTC) - timedelta(days=SERVED_DAYS + 0.5)).replace(microsecond=0)
    world = simulate(start)
    asyncio.run(server_sql(stack_settings, f"CREATE DATABASE `{name}`"))
    try:
        asyncio.run(write_purchases(settings, world.purchases, world.history))
        staged = pages_only_model(world, tmp_path_factory.mktemp("pages-only"))
        serving = load_model(staged)
        inputs, outputs = served_records(world, serving, serving.version)
        old_inputs, old_outputs = older_records(world)

        async def write_topics() -> None:
            for topic in (settings.input_topic, settings.output_topic):
                await create_topic(settings, topic, 4)
            await produce(settings, settings.input_topic, old_inputs)
            await produce(settings, settings.output_topic, old_outputs)
            await produce(settings, settings.input_topic, inputs)
            await produce(settings, settings.output_topic, outputs)

        asyncio.run(write_topics())
        yield Served(world, settings, env, since=start - timedelta(hours=1), serving_version=serving.version,
                     duplicates=DUPLICATES)
    finally:
        asyncio.run(server_sql(stack_settings, f"DROP DATABASE IF EXISTS `{name}`"))
        asyncio.run(delete_topics(stack_settings, [env["INPUT_TOPIC"], env["OUTPUT_TOPIC"]]))


def registry_serving(root: Path, artifact: Path) -> LocalRegistry:
    registry = LocalRegistry(root)
    registry.promote(registry.register(artifact))
    return registry


def train_from_logged(served: Served, registry: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **served.env, "MODEL_URI": str(registry), "LOG_FORMAT": "console"}
    return subprocess.run([sys.executable, "-m", "model.train", "--from-logged", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def test_a_model_trained_on_what_was_served_replaces_a_worse_serving_model(served, tmp_path):
    """The serving model knew only the pages; the one trained on the served events, labelled by the
    purchases and with each user's features as of each event, ranks far better and is promoted."""
    registry = registry_serving(tmp_path / "registry", pages_only_model(served.world, tmp_path))
    before = registry.serving()

    done = train_from_logged(served, registry.root, "--since", served.since.isoformat(), "--promote", *LOOSE_GATES)

    assert done.returncode == 0, done.stderr[-3000:]
    new = registry.serving()
    assert before is not None and new is not None and new != before
    assert [info.version for info in registry.versions()] == sorted([before, new])
    metadata = json.loads((registry.version_dir(new) / "model.json").read_text())
    training, comparison = metadata["training"], metadata["comparison"]
    world = served.world
    assert training["source"] == "logged"
    assert training["served_events"] == len(world.events)  # the older records and the unpredicted events left out
    assert training["labelled_events"] == world.labelled_count()
    assert training["train_rows"] + training["holdout_rows"] == world.labelled_count()
    assert training["read"]["duplicate_predictions"] == served.duplicates
    assert comparison["serving_version"] == before
    # Pages alone rank purchases far worse than pages with the user's history (ROC AUC ~0.62 against ~0.75).
    assert comparison["new"]["roc_auc"] > comparison["serving"]["roc_auc"] + 0.05
    assert metadata["metrics"]["serving_roc_auc"] == comparison["serving"]["roc_auc"]
    assert "serving_roc_auc" in (registry.version_dir(new) / "report.html").read_text()
    table = done.stdout.splitlines()
    assert any(line.startswith("new model") for line in table)
    assert any(line.startswith(f"serving {before}") for line in table)


def test_a_model_worse_than_the_serving_one_on_the_recent_events_is_refused_and_nothing_registered(served, tmp_path):
    """The oracle serves; a model learned from a quarter of the served events cannot match it, and the
    comparison on the other three quarters (held out, so that it is decisive) says so."""
    registry = registry_serving(tmp_path / "registry", oracle_model(served.world, tmp_path))
    before = [info.version for info in registry.versions()]

    done = train_from_logged(served, registry.root, "--since", served.since.isoformat(), "--holdout-fraction", "0.75",
                             "--promote", *LOOSE_GATES)

    assert done.returncode == 3, done.stderr[-3000:]
    assert [info.version for info in registry.versions()] == before
    assert registry.serving() == before[0]
    assert "is worse than the serving model 20261101T000000Z-oracle0000" in done.stderr
    assert "nothing registered" in done.stderr
    [rejected] = list((registry.root / "rejected").iterdir())
    assert (rejected / "report.html").is_file()
    comparison = json.loads((rejected / "model.json").read_text())["comparison"]
    assert comparison["not_worse"] is False


def test_too_few_labelled_events_stop_the_run_with_a_clear_message(served, tmp_path):
    """Read from just before the last events: their label windows have not closed, so there is next to nothing to learn from."""
    registry = registry_serving(tmp_path / "registry", pages_only_model(served.world, tmp_path))
    since = served.world.events[-150][2]

    done = train_from_logged(served, registry.root, "--since", since.isoformat())

    assert done.returncode == 4, done.stderr[-3000:]
    assert "served events have a closed label window, at least 200 are needed" in done.stderr
    assert len(registry.versions()) == 1
