"""At-least-once delivery over in-memory stand-ins: offsets are committed only once the outputs
are acknowledged, a failed delivery rewinds to the last commit, and a lost commit is not fatal."""


from aiokafka.errors import CommitFailedError, KafkaTimeoutError
from aiokafka.structs import TopicPartition

from events.schema import decode_prediction
from tests.factories import event_bytes
from tests.fakes.kafka import InMemorySink, make_record
from tests.service.loops import ALO_SETTINGS as SETTINGS
from tests.service.loops import make_loop


async def test_a_failed_delivery_rewinds_to_the_last_commit_and_is_processed_again(model):
    """A broker timeout on publish drops the work in flight, rewinds, and the batch is predicted and committed after all."""
    sink = InMemorySink(failures_before_success=1, error=KafkaTimeoutError())
    records = [make_record(event_bytes(event_id="a"), offset=0), make_record(event_bytes(event_id="b"), offset=1)]
    loop, source, sink, _, _ = make_loop([records], model, sink=sink)
    await loop.run()
    assert loop.stats.retries == 1
    assert (TopicPartition("input_topic", 0), "beginning") in source.seeks, "nothing was committed yet: back to the start"
    # Whatever was delivered before the failure is delivered again: at least once.
    assert {decode_prediction(v).event_id for _, v, _, _ in sink.to(SETTINGS.output_topic)} == {"a", "b"}
    assert source.commits == [{TopicPartition("input_topic", 0): 2}]


async def test_offsets_are_committed_only_for_delivered_outputs(model):
    """Every commit covers only records whose predictions Kafka had already acknowledged."""
    delivered_ids: set[str] = set()

    class RecordingSink(InMemorySink):
        def _deliver(self, topic, records):
            delivery = super()._deliver(topic, records)
            delivered_ids.update(decode_prediction(value).event_id for _, value, _ in records)
            return delivery

    batches = [[make_record(event_bytes(event_id=f"e{n}"), offset=n)] for n in range(6)]
    by_offset = {n: f"e{n}" for n in range(6)}
    loop, source, _, _, _ = make_loop(batches, model, sink=RecordingSink())
    original_commit = source.commit

    async def commit(offsets):
        for offset in range(offsets[TopicPartition("input_topic", 0)]):
            assert by_offset[offset] in delivered_ids, f"offset {offset} committed before its prediction was delivered"
        await original_commit(offsets)

    source.commit = commit
    await loop.run()
    assert source.commits and source.commits[-1] == {TopicPartition("input_topic", 0): 6}


async def test_predictions_go_out_as_one_batch_per_partition_in_input_order(model):
    """A batch's predictions are sent as record batches per output partition, and each user's stay in order."""
    records = [make_record(event_bytes(user_id=n % 7, event_id=f"e{n:03d}"), offset=n) for n in range(120)]
    loop, _, sink, _, _ = make_loop([records], model)
    await loop.run()
    assert len(sink.batches) < 20, "batches, not one send per record"
    per_user: dict[bytes, list[str]] = {}
    for _, value, key, _ in sink.to(SETTINGS.output_topic):
        per_user.setdefault(key, []).append(decode_prediction(value).event_id)
    assert all(ids == sorted(ids) for ids in per_user.values())
    assert sum(len(ids) for ids in per_user.values()) == 120


async def test_a_commit_lost_to_a_rebalance_does_not_stop_the_loop(model):
    """CommitFailedError means another instance replays the batch; the loop goes on with the next one."""
    loop, source, sink, _, _ = make_loop([[make_record(event_bytes(event_id="a"))], [make_record(event_bytes(event_id="b"))]], model)

    async def failing_commit(offsets):
        raise CommitFailedError("rebalanced")

    source.commit = failing_commit
    await loop.run()
    assert {decode_prediction(v).event_id for _, v, _, _ in sink.to(SETTINGS.output_topic)} == {"a", "b"}
