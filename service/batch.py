"""What happens to one micro-batch of input records, apart from Kafka itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from aiokafka.structs import ConsumerRecord

from events.schema import Event, InvalidEvent, Prediction, parse_event
from model.artifact import PurchaseModel
from offline_store.features import FeatureStore, features_or_cold_start


log = logging.getLogger(__name__)


class ModelOutputError(RuntimeError):
    """The model returned something that is not a probability per event: a bug, not bad input."""


@dataclass
class SplitBatch:
    valid: list[tuple[ConsumerRecord, Event]] = field(default_factory=list)
    invalid: list[tuple[ConsumerRecord, InvalidEvent]] = field(default_factory=list)


def split_batch(records: Sequence[ConsumerRecord]) -> SplitBatch:
    """Validate every record; the bad ones are kept with the reason, never raised."""
    batch = SplitBatch()
    for record in records:
        try:
            batch.valid.append((record, parse_event(record.value)))
        except InvalidEvent as error:
            batch.invalid.append((record, error))
        except Exception as exc:  # noqa: BLE001
            # A parser gap, not an outage: if it escaped, its uncommitted record would stop the
            # service on every restart. Dead-letter it so it can be studied, and go on.
            log.exception("unexpected error parsing %s[%d]@%d", record.topic, record.partition, record.offset)
            batch.invalid.append((record, InvalidEvent("unparseable", f"{type(exc).__name__}: {exc}")))
    return batch


async def predict_events(
    events: Sequence[Event], feature_store: FeatureStore, model: PurchaseModel
) -> list[Prediction]:
    """One feature lookup and one model call for the whole batch.

    Infrastructure errors from the feature store propagate: the caller retries them.
    """
    if not events:
        return []
    known = await feature_store.get_features([event.user_id for event in events])
    users = [features_or_cold_start(known, event.user_id) for event in events]
    # predict_proba holds the GIL for a while on big batches; a thread keeps the loop (and the
    # consumer's heartbeats) responsive meanwhile.
    probabilities = await asyncio.to_thread(model.predict, [event.pages for event in events], users)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    # NaN fails both comparisons, so it is caught here too.
    if probabilities.shape != (len(events),) or not np.all((probabilities >= 0.0) & (probabilities <= 1.0)):
        raise ModelOutputError(f"model returned {probabilities.shape} values for {len(events)} events, or values outside [0, 1]")
    predicted_at = datetime.now(UTC)
    return [
        Prediction(
            event_id=event.event_id,
            user_id=event.user_id,
            purchase_probability=float(probability),
            model_version=model.version,
            timestamp=event.timestamp,
            predicted_at=predicted_at,
        )
        for event, probability in zip(events, probabilities)
    ]
