"""One feature lookup and one model call (two with a shadow) for a whole batch of valid events."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from errors import PredictionError
from events.schema import Event, Prediction
from features.inputs import NumericInputs, Pages, numeric_inputs
from features.user import FeatureStore, UserFeatures
from model.artifact import PurchaseModel
from service.observe.stats import ServiceStats

log = logging.getLogger(__name__)

# Batches up to this size are scored on the event loop when the model is folded (about 20 ms).
INLINE_SCORING_MAX_EVENTS = 10_000


class ModelOutputError(PredictionError):
    """The model returned something that is not a probability per event: a bug, not bad input."""


@dataclass(frozen=True)
class Predicted:
    predictions: list[Prediction]
    # The shadow model's outputs for the same events, and both models' scores; None without a shadow.
    shadow: list[Prediction] | None = None
    serving_scores: np.ndarray | None = None
    shadow_scores: np.ndarray | None = None


async def predict_events(
    events: Sequence[Event], feature_store: FeatureStore, model: PurchaseModel, stats: ServiceStats | None = None,
    shadow: PurchaseModel | None = None, shadow_outputs: bool = False,
) -> Predicted:
    """One feature lookup and one model call for the whole batch, features taken at each event's own time.

    Infrastructure errors from the feature store propagate: the caller retries them. The shadow's
    Prediction records are built only with `shadow_outputs`: without a topic to publish them to, a
    shadow costs its scoring and the comparison, nothing more.
    """
    if not events:
        return Predicted([], [] if shadow is not None else None)
    started = time.perf_counter()
    user_ids = [event.user_id for event in events]
    known = await feature_store.get_features(user_ids)
    users = [known.get(user_id) for user_id in user_ids]
    looked_up = time.perf_counter()
    pages = [event.pages for event in events]
    event_at_s = np.fromiter((event.timestamp.timestamp() for event in events), np.float64, len(events))
    numbers = numeric_inputs(model.contract, users, event_at_s)
    probabilities = await _score(model, pages, numbers, len(events))
    if stats is not None:
        stats.observe_stage("features", looked_up - started)
        stats.observe_stage("predict", time.perf_counter() - looked_up)
    predicted_at = datetime.now(UTC)  # one clock reading for the batch
    predictions = _predictions(events, probabilities, model.version, predicted_at)
    if shadow is None:
        return Predicted(predictions)
    shadow_numbers = numbers if shadow.contract == model.contract else numeric_inputs(shadow.contract, users, event_at_s)
    shadow_scores = await _score(shadow, pages, shadow_numbers, len(events))
    shadow_predictions = _predictions(events, shadow_scores, shadow.version, predicted_at) if shadow_outputs else []
    return Predicted(predictions, shadow_predictions, probabilities, shadow_scores)


async def _score(model: PurchaseModel, pages: list[Pages], numbers: NumericInputs, count: int) -> np.ndarray:
    if model.scorer is not None and count < INLINE_SCORING_MAX_EVENTS:
        # The folded scorer takes about 2 µs an event; handing it to a thread costs more than
        # that on a service pinned to one core (measured: 11% of its CPU in thread wake-ups).
        probabilities = model.predict_numbers(pages, numbers)
    else:
        # The Pipeline (10+ ms a call) or a huge batch: a thread keeps the loop and the
        # consumer's heartbeats responsive meanwhile.
        probabilities = await asyncio.to_thread(model.predict_numbers, pages, numbers)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    # NaN fails both comparisons, so it is caught here too.
    if probabilities.shape != (count,) or not np.all((probabilities >= 0.0) & (probabilities <= 1.0)):
        raise ModelOutputError(
            f"model {model.version} returned {probabilities.shape} values for {count} events, or values outside [0, 1]"
        )
    return probabilities


def _predictions(events: Sequence[Event], probabilities: np.ndarray, version: str, predicted_at: datetime) -> list[Prediction]:
    # Positional arguments and tolist(): this runs once per event.
    return [
        Prediction(event.event_id, event.user_id, probability, version, event.timestamp, predicted_at)
        for event, probability in zip(events, probabilities.tolist(), strict=True)
    ]


__all__ = ["INLINE_SCORING_MAX_EVENTS", "ModelOutputError", "Predicted", "UserFeatures", "predict_events"]
