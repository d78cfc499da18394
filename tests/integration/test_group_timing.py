"""The consumer group's timings, against the real broker: rebalances and positions lost to retention."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import pytest
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import TopicPartition

from messaging.kafka_security import kafka_client_options
from tests.conftest import STORE_USERS
from tests.factories import random_events
from tests.integration.kafka_helpers import committed_offsets, read_topic, send_records
from tests.integration.test_hostile_records import decode
from tests.integration.test_pipeline import as_records, read_predictions
from tools.chaos.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

# Short but valid group timings (the broker's minimum session is 6 s): the revoke wait they
# leave is 8 - 1 - 1 = 6 s.
FAST_GROUP = {
    "KAFKA_SESSION_TIMEOUT_MS": "6000",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
    "KAFKA_REBALANCE_TIMEOUT_MS": "8000",
    "KAFKA_MAX_POLL_INTERVAL_MS": "60000",
}


def test_a_batch_stuck_past_the_rebalance_deadline_is_abandoned_not_duplicated(pipeline_settings, start_service):
    """An instance stuck on MySQL when a second one joins abandons its batch uncommitted and stays in the group;
    every event is then predicted exactly once."""
    with TcpProxy(pipeline_settings.mysql_host, pipeline_settings.mysql_port) as proxy:
        stuck = start_service(MYSQL_PORT=str(proxy.port), FEATURE_CACHE_MAX_USERS="0", **FAST_GROUP)
        stuck.wait_for_message("partitions assigned")
        proxy.cut()
        events = random_events(200, list(range(STORE_USERS)), seed=41)
        asyncio.run(send_records(pipeline_settings, as_records(events)))
        stuck.wait_for_message("MySQL unavailable while looking up features", timeout_s=30)

        joining = start_service(**FAST_GROUP)
        stuck.wait_for_message("abandoning the work in hand uncommitted (the rebalance", timeout_s=60)
        proxy.restore()

        predicted = Counter(decode(r) for r in read_predictions(pipeline_settings, [e.event_id for e in events], timeout_s=90))
        assert set(predicted) == {e.event_id for e in events}
        # Let any late duplicate arrive before counting.
        late = asyncio.run(read_topic(pipeline_settings, pipeline_settings.output_topic, lambda rs: False, 3))
        assert Counter(decode(r) for r in late) == predicted
        assert max(predicted.values()) == 1, "no event predicted twice"
        stuck.wait_for_message("partitions assigned", count=2)
        assert not [m for m in stuck.messages() if "could not commit" in m], "it stayed a member"
        assert stuck.stop() == 0 and joining.stop() == 0


def test_a_zombie_instance_is_fenced_and_no_event_is_predicted_twice(pipeline_settings, start_service):
    """One of two instances is frozen (SIGSTOP) mid-stream past its session timeout, so the other takes its
    partitions over, then thawed: whatever it had in hand is fenced off, and a read_committed reader sees
    every event predicted exactly once."""
    zombie = start_service(**FAST_GROUP)
    zombie.wait_for_message("transactions ready")
    survivor = start_service(**FAST_GROUP)
    survivor.wait_for_message("transactions ready")
    events = random_events(1_500, list(range(STORE_USERS)), seed=61)
    records = as_records(events)
    assert zombie.process is not None

    async def stream() -> None:
        # 3 s of steady load around the freeze, so the zombie has transactions open when it stops.
        for n in range(0, len(records), 50):
            await send_records(pipeline_settings, records[n:n + 50])
            await asyncio.sleep(0.1)

    async def freeze_mid_stream() -> None:
        await asyncio.sleep(1.0)
        zombie.process.send_signal(signal.SIGSTOP)

    async def both() -> None:
        await asyncio.gather(stream(), freeze_mid_stream())

    try:
        asyncio.run(both())
        survivor.wait_for_message("partitions assigned", count=2, timeout_s=60)  # took the zombie's partitions
    finally:
        zombie.process.send_signal(signal.SIGCONT)
    zombie.wait_for_message("partitions assigned", count=3, timeout_s=60)  # rejoined after waking

    wanted = [e.event_id for e in events]
    predicted = Counter(decode(r) for r in read_predictions(pipeline_settings, wanted, timeout_s=90))
    late = asyncio.run(read_topic(pipeline_settings, pipeline_settings.output_topic, lambda rs: False, 3))
    assert Counter(decode(r) for r in late) == predicted
    assert set(predicted) == set(wanted)
    assert max(predicted.values()) == 1, "no event predicted twice"
    assert zombie.stop() == 0 and survivor.stop() == 0


def test_offsets_deleted_by_retention_are_reported_not_skipped_silently(pipeline_settings, start_service):
    """A committed position whose records were deleted before the service came back is an ERROR naming the
    partition and the count, and is counted in the stats; the records still there are predicted."""
    key = b"one-partition"
    first = random_events(20, list(range(STORE_USERS)), seed=51)
    asyncio.run(send_records(pipeline_settings, [(key, v) for _, v in as_records(first)]))
    service = start_service()
    read_predictions(pipeline_settings, [e.event_id for e in first])
    assert service.stop() == 0
    ((tp, committed),) = asyncio.run(committed_offsets(pipeline_settings)).items()
    assert committed == 20

    later = random_events(80, list(range(STORE_USERS)), seed=52)
    asyncio.run(send_records(pipeline_settings, [(key, v) for _, v in as_records(later)]))
    asyncio.run(delete_records_before(pipeline_settings, tp, 60))  # as retention would, while the service was down

    service = start_service()
    survivors = [e.event_id for e in later[40:]]
    assert set(survivors) <= {decode(r) for r in read_predictions(pipeline_settings, survivors)}
    service.wait_for_message(f"{tp.topic}[{tp.partition}]: offset 20 was deleted before it was read")
    (error,) = [e for e in service.log_entries() if e.get("level") == "error"]
    assert "40 offsets were skipped, resuming at 60" in error["message"]
    service.wait_for_message("40 offsets skipped")
    assert service.stop() == 0


async def delete_records_before(settings, tp: TopicPartition, offset: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings))
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(offset)})
    finally:
        await admin.close()
