"""End to end: a purchase reaches the service's predictions within seconds, through the purchase sink and the
service's poll for changed feature rows, with the real service and sink processes, broker and MariaDB."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer

from events.purchase import Purchase, encode_purchase
from events.schema import InputEvent, Prediction, decode_prediction, encode_event, encode_key
from messaging.kafka_security import kafka_client_options
from model.artifact import load_model
from offline_store.mysql import MySQLFeatureStore, close_pool, create_pool, fetch_all
from tests.conftest import STORE_USERS, delete_topics, env_settings, loaded_store
from tests.integration.kafka_helpers import send_records
from tests.integration.service_process import REPO_ROOT

pytestmark = pytest.mark.integration

# The spec: a purchase changes the predictions of its user's next events within 10 s.
FRESHNESS_BOUND_S = 10.0
COLD_START_USER = STORE_USERS + 4242
PAGES = ("home", "product", "cart")


@pytest.fixture
def fresh_env(pipeline_env, stack_settings):
    """The pipeline's topics and model, with a store of its own (the sink writes into it) and the sink's topic and group."""
    run = uuid.uuid4().hex[:8]
    env = {**pipeline_env, "PURCHASES_TOPIC": f"it-{run}-purchases", "PURCHASES_GROUP_ID": f"it-{run}-sink"}
    try:
        with loaded_store(stack_settings, "purchases_sink", STORE_USERS, as_of=datetime.now(UTC) - timedelta(minutes=1)) as database:
            yield {**env, "MYSQL_DATABASE": database}
    finally:
        asyncio.run(delete_topics(stack_settings, [env["PURCHASES_TOPIC"]]))


@pytest.fixture
def start_sink(fresh_env, tmp_path):
    processes: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        with (tmp_path / "sink.log").open("ab") as log_file:
            process = subprocess.Popen([sys.executable, "-m", "offline_store.purchase_sink"], cwd=REPO_ROOT,
                                       env={**os.environ, **fresh_env}, stdout=log_file, stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


class Predictions:
    """The output topic read once, from the start, as predictions arrive."""

    def __init__(self, settings) -> None:
        self._consumer = AIOKafkaConsumer(settings.output_topic, bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                          auto_offset_reset="earliest", isolation_level="read_committed", **kafka_client_options(settings))
        self._seen: dict[str, Prediction] = {}

    async def __aenter__(self) -> Predictions:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._consumer.stop()

    async def of(self, event_id: str, timeout_s: float) -> Prediction:
        deadline = time.monotonic() + timeout_s
        while event_id not in self._seen:
            assert time.monotonic() < deadline, f"no prediction for {event_id} within {timeout_s} s"
            for records in (await self._consumer.getmany(timeout_ms=100)).values():
                for record in records:
                    prediction = decode_prediction(record.value)
                    self._seen[prediction.event_id] = prediction
        return self._seen[event_id]


def event_now(user_id: int) -> InputEvent:
    return InputEvent(event_id=f"fresh-{uuid.uuid4().hex}", user_id=user_id, timestamp=datetime.now(UTC), last_three_pages_visited=PAGES)


async def send_event(settings, event: InputEvent) -> None:
    await send_records(settings, [(encode_key(event.user_id), encode_event(event))])


async def send_purchase(settings, purchase: Purchase) -> None:
    await send_records(settings, [(encode_key(purchase.user_id), encode_purchase(purchase))], topic=settings.purchases_topic)


async def store_features(settings, user_id: int):
    pool = await create_pool(settings)
    try:
        return (await MySQLFeatureStore(pool, 5000).get_features([user_id])).get(user_id)
    finally:
        await close_pool(pool)


def test_a_purchase_changes_the_next_prediction_of_a_cold_start_user_within_ten_seconds(
    fresh_env, start_service, start_sink, model_path, capsys
):
    """A cold-start user buys: an event sent after the purchase gets a different prediction within 10 s, the one the model
    gives for the features the sink computed (no longer cold-start)."""
    settings = env_settings(**fresh_env)
    service = start_service(MYSQL_DATABASE=fresh_env["MYSQL_DATABASE"])
    sink = start_sink()
    amount = 180.0

    async def scenario():
        async with Predictions(settings) as predictions:
            before = event_now(COLD_START_USER)
            await send_event(settings, before)
            cold = await predictions.of(before.event_id, 60)

            # The sink is up and consuming once a first purchase (another user's) is in the store.
            await send_purchase(settings, Purchase("warm-up", 0, 12.0, datetime.now(UTC) - timedelta(seconds=1)))
            deadline = time.monotonic() + 60
            while not await stored(settings, "warm-up"):
                assert sink.poll() is None, "the sink exited"
                assert time.monotonic() < deadline, "the sink wrote no purchase within 60 s"
                await asyncio.sleep(0.2)

            bought_at = datetime.now(UTC)
            await send_purchase(settings, Purchase("first-purchase", COLD_START_USER, amount, bought_at))
            sent = time.monotonic()
            while True:
                after = event_now(COLD_START_USER)
                await send_event(settings, after)
                fresh = await predictions.of(after.event_id, FRESHNESS_BOUND_S)
                elapsed = time.monotonic() - sent
                if fresh.purchase_probability != cold.purchase_probability or elapsed > FRESHNESS_BOUND_S:
                    return cold, after, fresh, elapsed, bought_at
                await asyncio.sleep(0.1)

    cold, after, fresh, elapsed, bought_at = asyncio.run(scenario())
    with capsys.disabled():
        print(f"\nfresh features: {elapsed:.2f} s from sending the purchase to the first prediction that differed")
    assert fresh.purchase_probability != cold.purchase_probability, f"still the cold-start prediction {elapsed:.1f} s after the purchase"
    assert elapsed <= FRESHNESS_BOUND_S

    features = asyncio.run(store_features(settings, COLD_START_USER))
    assert features is not None, "the user has a feature row: no longer cold-start"
    assert (features.mean_last_3_purchases, features.purchase_count) == (amount, 1)
    assert features.last_purchase_at == pytest.approx(bought_at.timestamp(), abs=1e-6)
    (expected,) = load_model(model_path).predict([PAGES], [features], [after.timestamp.timestamp()])
    assert abs(fresh.purchase_probability - expected) <= 1e-9, "the prediction is the model's on the sink's features"

    sink.terminate()
    assert sink.wait(timeout=30) == 0
    assert service.stop() == 0


async def stored(settings, purchase_id: str) -> bool:
    pool = await create_pool(settings)
    try:
        rows = await fetch_all(pool, "SELECT 1 FROM purchases WHERE purchase_ref = %s", (purchase_id,), 10)
    finally:
        await close_pool(pool)
    return bool(rows)
