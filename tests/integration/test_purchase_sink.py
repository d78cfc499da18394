"""The purchase sink against the real broker and MariaDB: purchases written once, invalid ones dead-lettered with
the reason, offsets committed only after the write, and a MySQL outage retried without committing."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from events.dead_letter import ERROR_KIND, ERROR_REASON, SOURCE_TOPIC, read_dead_letter_headers
from events.purchase import Purchase, encode_purchase
from events.schema import encode_key
from offline_store.mysql import close_pool, create_pool, fetch_all
from offline_store.purchase_sink import SinkCounts, run_purchase_sink
from service.delivery.decompression import decompression_patches
from tests.conftest import delete_topics, env_settings, loaded_store, server_sql
from tests.integration.kafka_helpers import committed_offsets, read_topic, send_records
from tests.integration.service_process import REPO_ROOT
from tools.chaos.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

USERS = 40
WAIT_S = 30.0


@pytest.fixture(autouse=True)
def decoders_restored(monkeypatch):
    """The sink bounds aiokafka's decoders for the whole process, as a program should; the tests after these
    (tests/service/delivery/test_decompression.py) check the unbounded names, so they are put back."""
    for module, name, _bounded in decompression_patches(1):
        monkeypatch.setattr(module, name, getattr(module, name))


@pytest.fixture
def sink_env(stack_settings):
    """Private topics, group and store (loaded by the loader) for one test; dropped afterwards."""
    run = uuid.uuid4().hex[:8]
    env = {
        "PURCHASES_TOPIC": f"it-{run}-purchases",
        "DLQ_TOPIC": f"it-{run}-dlq",
        "PURCHASES_GROUP_ID": f"it-{run}-sink",
        "TOPIC_PARTITIONS": "3",
        "RETRY_BACKOFF_MAX_MS": "300",
        "POLL_TIMEOUT_MS": "100",
    }
    try:
        with loaded_store(stack_settings, "purchases_sink", USERS, seed=2, as_of=datetime.now(UTC) - timedelta(minutes=1)) as database:
            yield {**env, "MYSQL_DATABASE": database}
    finally:
        asyncio.run(delete_topics(stack_settings, [env["PURCHASES_TOPIC"], env["DLQ_TOPIC"]]))


def purchase_record(purchase_id: str, user_id: int, amount: float = 25.0) -> tuple[bytes, bytes]:
    at = datetime.now(UTC) - timedelta(seconds=2)
    return encode_key(user_id), encode_purchase(Purchase(purchase_id, user_id, amount, at))


INVALID = [
    (encode_key(1), b"{not json"),
    (encode_key(2), b'{"purchase_id": "x", "user_id": 2, "amount": -3, "timestamp": "2026-12-05T17:00:00Z"}'),
]


async def until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {timeout_s} s"
        await asyncio.sleep(0.05)


async def stored_purchases(settings) -> list[tuple]:
    pool = await create_pool(settings)
    try:
        return await fetch_all(pool, "SELECT purchase_ref, user_id, amount FROM purchases WHERE purchase_ref IS NOT NULL", (), 10)
    finally:
        await close_pool(pool)


async def committed(settings) -> int:
    """The sink group's committed offsets on the purchases topic, summed (the topic is new, so the count of records)."""
    as_sink = dataclasses.replace(settings, kafka_group_id=settings.purchases_group_id, input_topic=settings.purchases_topic)
    return sum((await committed_offsets(as_sink)).values())


class RunningSink:
    """run_purchase_sink as a task of the test's own loop."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.stop = asyncio.Event()
        self.counts = SinkCounts()
        self.task = asyncio.create_task(run_purchase_sink(settings, self.stop, counts=self.counts))

    async def stopped(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


def test_purchases_are_written_once_and_invalid_ones_dead_lettered(sink_env):
    """Valid purchases (one id sent twice) become one row each, the invalid ones reach DLQ_TOPIC with kind and reason, the
    offsets are committed, and a second group replaying the topic from the start adds nothing."""
    settings = env_settings(**sink_env)
    valid = [purchase_record(f"p-{n}", n % USERS) for n in range(12)]
    repeated = purchase_record("p-3", 3, amount=999.0)

    async def scenario():
        await send_records(settings, [*valid, *INVALID, repeated], topic=settings.purchases_topic)
        sink = RunningSink(settings)
        await until(lambda: sink.counts.written + sink.counts.known == 13 and sink.counts.dead_letters == 2, "all handled")
        await sink.stopped()
        rows = await stored_purchases(settings)
        dead = await read_topic(settings, settings.dlq_topic, lambda rs: len(rs) >= 2, WAIT_S)
        offsets = await committed(settings)

        replay_settings = dataclasses.replace(settings, purchases_group_id=settings.purchases_group_id + "-replay")
        replay = RunningSink(replay_settings)
        await until(lambda: replay.counts.known == 13, "replayed")
        await replay.stopped()
        return sink.counts, rows, dead, offsets, replay.counts, await stored_purchases(settings)

    counts, rows, dead, offsets, replayed, rows_after_replay = asyncio.run(scenario())
    assert (counts.written, counts.known) == (12, 1)
    assert sorted(bytes(ref).decode() for ref, _user, _amount in rows) == sorted(f"p-{n}" for n in range(12))
    assert next(float(amount) for ref, _user, amount in rows if bytes(ref) == b"p-3") == 25.0, "the first record of an id wins"
    why = [read_dead_letter_headers(record.headers) for record in dead]
    assert sorted(w[ERROR_KIND] for w in why) == ["invalid_field", "not_json"]
    assert all(w[ERROR_REASON] and w[SOURCE_TOPIC] == settings.purchases_topic for w in why)
    assert offsets == len(valid) + len(INVALID) + 1
    assert replayed.written == 0 and rows_after_replay == rows


def test_a_mysql_outage_holds_the_offsets_and_loses_nothing(sink_env, caplog):
    """MySQL cut mid-stream: the sink retries, commits no offset for what it cannot write, and writes it all once MySQL is back."""
    base = env_settings(**sink_env)
    before = [purchase_record(f"b-{n}", n) for n in range(5)]
    during = [purchase_record(f"d-{n}", n) for n in range(5)]

    async def scenario(proxy: TcpProxy):
        settings = dataclasses.replace(base, mysql_port=proxy.port)
        sink = RunningSink(settings)
        await send_records(settings, before, topic=settings.purchases_topic)
        await until(lambda: sink.counts.written == 5, "written before the outage")
        await until_committed(settings, 5)

        proxy.cut()
        await send_records(settings, during, topic=settings.purchases_topic)
        await until(lambda: sum("MySQL unavailable while writing" in r.getMessage() for r in caplog.records) >= 2, "retried")
        held = await committed(settings)

        proxy.restore()
        await until(lambda: sink.counts.written == 10, "written after the outage")
        await until_committed(settings, 10)
        await sink.stopped()
        return held, await stored_purchases(base)

    with caplog.at_level(logging.WARNING), TcpProxy(base.mysql_host, base.mysql_port) as proxy:
        held, rows = asyncio.run(scenario(proxy))
    assert held == 5, "no commit while MySQL is down"
    assert len(rows) == 10


async def until_committed(settings, count: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while await committed(settings) < count:
        assert time.monotonic() < deadline, f"fewer than {count} offsets committed within {WAIT_S} s"
        await asyncio.sleep(0.1)


def test_the_program_refuses_a_store_it_cannot_write_with_exit_code_2(sink_env, stack_settings):
    """`python -m offline_store.purchase_sink` on a database the loader never built: one message saying what to run, exit 2."""
    empty = f"purchases_sink_{uuid.uuid4().hex[:8]}"
    asyncio.run(server_sql(stack_settings, f"CREATE DATABASE `{empty}`"))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "offline_store.purchase_sink"], cwd=REPO_ROOT, env={**os.environ, **sink_env, "MYSQL_DATABASE": empty},
            capture_output=True, text=True, timeout=90,
        )
    finally:
        asyncio.run(server_sql(stack_settings, f"DROP DATABASE IF EXISTS `{empty}`"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "purchases.purchase_ref" in result.stderr and "--keep-history" in result.stderr
    assert "Traceback" not in result.stderr
