"""The consumer's position, owned by the delivery: where a new partition starts, and what happens
when a committed offset is gone."""

import asyncio

from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError
from aiokafka.structs import TopicPartition

from service.delivery.positions import next_offsets
from tests.fakes.kafka import InMemorySink, InMemorySource, make_record
from tests.fakes.mysql import InMemoryFeatureStore
from tests.service.loops import alo_loop, make_loop


def test_next_offsets_is_one_past_the_last_offset_per_partition():
    """Commit positions are per partition and point at the next record to read."""
    by_partition = {
        TopicPartition("input_topic", 0): [make_record(b"x", partition=0, offset=3), make_record(b"x", partition=0, offset=7)],
        TopicPartition("input_topic", 2): [make_record(b"x", partition=2, offset=0)],
    }
    assert next_offsets(by_partition) == {TopicPartition("input_topic", 0): 8, TopicPartition("input_topic", 2): 1}


async def test_a_partition_without_a_committed_offset_starts_at_its_beginning(model):
    """A new group reads each partition from its oldest record, as auto_offset_reset=earliest would."""
    tp = TopicPartition("input_topic", 3)
    loop, source, _, _, _ = make_loop([NoOffsetForPartitionError(tp)], model)
    await loop.run()
    assert source.seeks == [(tp, "beginning")]
    assert loop.stats.skipped_offsets == 0


async def test_offsets_deleted_by_retention_are_reported_and_counted(model, caplog):
    """A committed offset below the log start is a loss: an ERROR names the partition and the count, and the loop resumes at the start."""
    tp = TopicPartition("input_topic", 2)
    stop = asyncio.Event()
    source = InMemorySource([OffsetOutOfRangeError({tp: 40})], stop, log_start={tp: 100}, log_end={tp: 250})
    loop = alo_loop(source, InMemorySink(), InMemoryFeatureStore(), model, stop)
    await loop.run()
    assert source.seeks == [(tp, 100)]
    assert loop.stats.skipped_offsets == 60
    (error,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "input_topic[2]" in error.getMessage() and "60 offsets were skipped" in error.getMessage()
