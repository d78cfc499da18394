"""Publishing the shadow model's predictions to SHADOW_OUTPUT_TOPIC, best effort.

The shadow's outputs are for comparing models later, on the same events (joined by event_id), so
they never touch the output topic, the dead-letter topic or the serving path's transactions: its
own idempotent producer sends them in record batches per partition, keyed like the predictions,
and a failed send is counted, not retried. A crash or a rebalance can therefore drop or repeat
some shadow outputs; the serving outputs keep their guarantee.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from events.schema import Prediction, encode_key, encode_prediction
from service.delivery.key_partitions import KeyPartitions, keyed_partition
from service.delivery.outputs import RecordSink, outcome
from service.delivery.record_batches import PartitionSender
from service.failures import describe_error
from service.observe.model_stats import ModelStats

log = logging.getLogger(__name__)


class ShadowOutputs:
    def __init__(self, sink: RecordSink, topic: str, stats: ModelStats) -> None:
        self._sink = sink
        self._topic = topic
        self._stats = stats
        self._key_partitions = KeyPartitions()
        self._senders: dict[int, PartitionSender] = {}
        self._warned = False

    async def publish(self, predictions: Sequence[Prediction]) -> None:
        """Hand the batch to the producer; acknowledgements are only counted."""
        partitions = len(await self._sink.partitions_for(self._topic))
        partition_of = self._key_partitions.table(partitions)
        futures: set[asyncio.Future[Any]] = set()
        for prediction in predictions:
            known = partition_of.get(prediction.user_id)
            if known is None:
                key = encode_key(prediction.user_id)
                known = partition_of[prediction.user_id] = (key, keyed_partition(key, partitions))
            key, partition = known
            sender = self._senders.get(partition)
            if sender is None:
                sender = self._senders[partition] = PartitionSender(self._sink, self._topic, partition)
            future = sender.append(key, encode_prediction(prediction))
            if future not in futures:
                futures.add(future)
                future.add_done_callback(self._on_delivered)
        for sender in self._senders.values():
            sender.flush()

    def _on_delivered(self, future: asyncio.Future[Any]) -> None:
        error = outcome(future)
        if error is None:
            return
        self._stats.shadow_failed_batches += 1
        if not self._warned:  # once: the counter tells how often
            self._warned = True
            log.warning("shadow outputs to %s are failing (counted, not retried): %s", self._topic, describe_error(error))

    async def close(self) -> None:
        for sender in self._senders.values():
            await sender.close()
