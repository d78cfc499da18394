"""producer.py --outcomes against the real broker and a loaded store: the purchases follow the events, each
within LABEL_WINDOW_S of an event of its user, sent no earlier than its own timestamp."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from events.purchase import decode_purchase
from events.schema import InvalidEvent, parse_event
from tests.conftest import STORE_USERS, delete_topics, env_settings
from tests.integration.kafka_helpers import read_topic
from tests.integration.service_process import REPO_ROOT

pytestmark = pytest.mark.integration

WINDOW_S = 3


@pytest.fixture
def outcomes_env(stack_settings, store_database) -> Iterator[dict[str, str]]:
    """Private topics (deleted afterwards), the test store, and a short label window."""
    run = uuid.uuid4().hex[:8]
    topics = {name: f"it-{run}-{name.split('_')[0].lower()}" for name in ("INPUT_TOPIC", "OUTPUT_TOPIC", "DLQ_TOPIC", "PURCHASES_TOPIC")}
    yield {**topics, "SHADOW_OUTPUT_TOPIC": "", "TOPIC_PARTITIONS": "2", "MYSQL_DATABASE": store_database[0],
           "LABEL_WINDOW_S": str(WINDOW_S)}
    asyncio.run(delete_topics(stack_settings, list(topics.values())))


def test_every_purchase_follows_an_event_of_its_user_within_the_window(outcomes_env):
    """The producer waits for its purchases; each decodes, is keyed by its user, falls in (t, t + LABEL_WINDOW_S]
    after a valid event t of that user, and reached Kafka no earlier than its own timestamp."""
    produced = subprocess.run(
        [sys.executable, "producer.py", "--outcomes", "--count", "80", "--rate", "40", "--seed", "5",
         "--users", str(STORE_USERS), "--invalid-ratio", "0.1"],
        cwd=REPO_ROOT, env={**os.environ, **outcomes_env}, capture_output=True, text=True, timeout=120,
    )
    assert produced.returncode == 0, produced.stderr[-3000:]
    summary = produced.stdout.strip().splitlines()[-1]
    counts = re.search(rf"sent (\d+) events .*; (\d+) purchases? to {outcomes_env['PURCHASES_TOPIC']}", summary)
    assert counts and "dropped" not in summary, summary
    events_sent, purchases_sent = (int(n) for n in counts.groups())
    assert events_sent == 80 and purchases_sent > 0

    settings = env_settings(**outcomes_env)
    event_records = asyncio.run(read_topic(settings, settings.input_topic, lambda r: len(r) >= events_sent, 30))
    purchase_records = asyncio.run(read_topic(settings, settings.purchases_topic, lambda r: len(r) >= purchases_sent, 30))
    assert len(event_records) == events_sent and len(purchase_records) == purchases_sent

    events_by_user: dict[int, list] = {}
    for record in event_records:
        try:
            event = parse_event(record.value)
        except InvalidEvent:
            continue
        events_by_user.setdefault(event.user_id, []).append(event.timestamp)
    for record in purchase_records:
        purchase = decode_purchase(record.value)
        assert record.key == str(purchase.user_id).encode()
        times = events_by_user.get(purchase.user_id, [])
        assert any(t < purchase.timestamp <= t + timedelta(seconds=WINDOW_S) for t in times), (purchase, times)
        # The record's timestamp is when the producer handed it over, in whole milliseconds.
        assert record.timestamp >= int(purchase.timestamp.timestamp() * 1000), (record.timestamp, purchase)
