"""Property tests of both delivery guarantees: in any order of polls, acknowledgements, failed
deliveries, failed rewinds, rebalances, crashes and log resets, no commit passes a record whose
output is not delivered, and once the faults stop every record of the log gets its output."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiokafka.errors import KafkaConnectionError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service.delivery.delivery_model import Instance, quiesce
from tests.service.delivery.model_cluster import PARTITIONS, Cluster

# Without the rewind-first rule (at_least_once) or the reset of the expected offset
# (exactly_once), fresh draws found a lost record within 61 to 827 examples (twelve seeds);
# an example takes a few milliseconds.
EXAMPLES = 2000
# DELIVERY_EXPLORE=N draws N fresh examples a mode instead of the fixed ones (N=20000 takes a
# few minutes), to look further than a run of `make test` does.
EXPLORE = int(os.environ.get("DELIVERY_EXPLORE", "0"))
# Turns after the faults stop: ample for the few dozen records an example writes.
HEALING_TURNS = 300

partition = st.sampled_from(range(len(PARTITIONS)))
ARGUMENTS = {
    "produce": (partition, st.integers(1, 8)),
    "acknowledge": (st.integers(1, 4),),
    "truncate": (partition, st.integers(0, 6)),
    "delete": (partition, st.integers(1, 3)),
}
# Weighted towards the steps that make several batches wait for Kafka at once, where a failed
# delivery has the most to get wrong; the rarer steps still come up in most examples.
KINDS = ["produce"] * 4 + ["turn"] * 5 + ["acknowledge"] * 2 + ["fail delivery"] * 2 + [
    "fail rewind", "rebalance", "crash", "truncate", "delete",
]
STEPS = st.sampled_from(KINDS).flatmap(lambda kind: st.tuples(st.just(kind), *ARGUMENTS.get(kind, ())))


async def play(mode: str, steps: list[tuple]) -> Cluster:
    cluster = Cluster()
    instance = Instance(cluster, mode)
    await instance.join()
    for step in steps:
        match step:
            case ("produce", p, count):
                cluster.produce(PARTITIONS[p], count)
            case ("turn",):
                instance.turn()
            case ("acknowledge", count):
                instance.sink.answer_oldest(None, count)
            case ("fail delivery",):
                instance.sink.answer_oldest(KafkaConnectionError("the partition leader is away (model)"))
                cluster.fail_next_send += 1
            case ("fail rewind",):
                instance.consumer.fail_next_committed += 1
            case ("rebalance",):
                await instance.rebalance()
            case ("crash",):
                instance.crash()
                instance = Instance(cluster, mode)
                await instance.join()
            case ("truncate", p, keep):
                cluster.truncate(PARTITIONS[p], keep)
            case ("delete", p, count):
                cluster.logs[PARTITIONS[p]].delete_before(count)
        await quiesce()
    cluster.fail_next_send = 0
    instance.consumer.fail_next_committed = 0
    for _ in range(HEALING_TURNS):
        if not cluster.undelivered():
            break
        while instance.sink.waiting:
            instance.sink.answer_oldest(None)
        instance.turn()
        await quiesce()
    return cluster


@pytest.mark.parametrize("mode", ["at_least_once", "exactly_once"])
# derandomize: the same examples on every run, so that a run fails for a change, not a draw.
@settings(
    max_examples=EXPLORE or EXAMPLES, deadline=None, derandomize=not EXPLORE,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(steps=st.lists(STEPS, max_size=40))
def test_no_commit_passes_an_undelivered_record_and_nothing_is_lost(mode, steps):
    """After any interleaving, no commit passed an undelivered record, and every record of the
    log is delivered once the faults stop (bar those a truncation exposed before a restart,
    which no consumer can tell apart: see Cluster.at_risk)."""
    cluster = asyncio.run(play(mode, steps))
    assert cluster.violations == []
    assert cluster.undelivered() == []
