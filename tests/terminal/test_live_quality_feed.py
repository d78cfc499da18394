"""The quality feed of `consumer.py --live` against the real broker: the newest snapshot at once, then each new one."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from config import Settings
from messaging.kafka_security import kafka_client_options
from quality.snapshot import ModelQuality, QualitySnapshot, encode_snapshot
from terminal.quality_feed import QualityFeed
from tests.conftest import delete_topics, env_settings
from tests.integration.kafka_helpers import create_topic, send_records

pytestmark = pytest.mark.integration

WAIT_S = 30.0
START = datetime(2026, 11, 26, 12, tzinfo=UTC)


def snapshot(seconds: int) -> bytes:
    model = ModelQuality(model_version=f"v{seconds}", role="serving", training_auc=0.8, labelled=seconds, window=seconds,
                         auc=0.75, log_loss=0.3, brier=0.1, ece=0.01, mean_probability=0.1, positive_rate=0.1)
    at = START + timedelta(seconds=seconds)
    return encode_snapshot(QualitySnapshot(at=at, watermark=at, pending=0, late_purchases=0, sampled_out=0, models=(model,)))


async def until(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return condition()


@pytest.fixture
def quality_settings(stack_settings):
    topic = f"it-{uuid.uuid4().hex[:8]}-quality"
    yield env_settings(QUALITY_TOPIC=topic)
    asyncio.run(delete_topics(stack_settings, [topic]))


async def test_the_feed_shows_the_newest_snapshot_at_once_then_follows_new_ones(quality_settings):
    topic = quality_settings.quality_topic
    await create_topic(quality_settings, topic, 1)
    # More snapshots than the feed looks back over, and one unreadable record among them.
    await send_records(quality_settings, [(b"quality", snapshot(n)) for n in range(15)] + [(b"quality", b"{")], topic=topic)
    feed, stop = QualityFeed(quality_settings), asyncio.Event()
    task = asyncio.create_task(feed.follow(stop))
    try:
        assert await until(lambda: feed.state.snapshot is not None and feed.state.unreadable == 1), feed.state
        assert feed.state.snapshot is not None and feed.state.snapshot.models[0].model_version == "v14"
        assert feed.state.problem is None
        await send_records(quality_settings, [(b"quality", snapshot(20))], topic=topic)
        assert await until(lambda: feed.state.snapshot is not None and feed.state.snapshot.models[0].model_version == "v20")
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)


async def test_a_missing_topic_is_waited_for_not_created(quality_settings):
    feed, stop = QualityFeed(quality_settings), asyncio.Event()
    task = asyncio.create_task(feed.follow(stop))
    try:
        assert await until(lambda: feed.state.problem is not None)
        assert feed.state.problem is not None and "does not exist yet" in feed.state.problem
        assert feed.state.snapshot is None
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)
    assert quality_settings.quality_topic not in await _topics(quality_settings)


async def _topics(settings: Settings) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings))
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()
