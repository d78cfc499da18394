"""Labelling predictions by event time, and the counts and windows of quality per model version and role.

The watermark W is the largest event time seen on any stream (predictions and purchases) minus
LABEL_LATE_ALLOWANCE_S. A prediction for user u at event time t is labelled once W ≥ t + LABEL_WINDOW_S:
positive when u has a purchase in (t, t + LABEL_WINDOW_S]. Each record moves W before the next one is
read, and every prediction it makes due is labelled then, in (event time, event id, role) order, so
labels and their order follow from the records alone: with no record later than the allowance,
whatever order the partitions are read in.

Nothing here reads Kafka or a clock but the wall clock of the last labelling: quality/monitor.py
feeds the records in and says which ones are read again after a restart (`replayed`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from events.purchase import Purchase
from events.schema import Prediction
from quality.event_time import SECOND_US, from_micros, micros
from quality.pending import Admission, PendingPrediction, PendingPredictions
from quality.purchases import PurchaseTimes
from quality.snapshot import ModelQuality, PartitionPosition, QualitySnapshot, Role
from quality.window import LabelledWindow, WindowQuality

ROLES = ("serving", "shadow")
# Each (model version, role) costs a window of QUALITY_WINDOW labels; a long run of retrains must not
# add windows for ever. Past this many, the one labelled least recently is dropped, counts and all.
MAX_MODELS = 64


@dataclass
class ModelBook:
    """One model version in one role: its label counts and its window."""

    model_version: str
    role: str
    window: LabelledWindow
    positive: int = 0
    negative: int = 0
    last_labelled: int = 0  # the tracker's labelling sequence: which book to drop first
    restored_window_start_us: int | None = None  # from the checkpoint, until the replay refills the window
    _measured: WindowQuality | None = None
    _measured_version: int = -1

    @property
    def labelled(self) -> int:
        return self.positive + self.negative

    def quality(self, remeasure: bool) -> WindowQuality:
        """The figures of the window; computed again only with `remeasure` and when labels came since."""
        if remeasure and self._measured_version != self.window.version:
            self._measured, self._measured_version = self.window.measure(), self.window.version
        return self._measured or WindowQuality(0)

    def window_start_us(self) -> int | None:
        starts = [start for start in (self.window.oldest_event_time_us(), self.restored_window_start_us) if start is not None]
        return min(starts, default=None)


class QualityTracker:
    def __init__(
        self, *, label_window_s: int, late_allowance_s: int, window_size: int, max_pending: int,
        max_models: int = MAX_MODELS, wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.label_window_us = label_window_s * SECOND_US
        self.late_allowance_us = late_allowance_s * SECOND_US
        self.window_size = window_size
        self.max_models = max_models
        self.pending = PendingPredictions(max_pending)
        # Purchases are far fewer than predictions; the same bound keeps a flood of them in check.
        self.purchases = PurchaseTimes(max_pending)
        self.books: dict[tuple[str, str], ModelBook] = {}
        self.max_event_time_us: int | None = None
        self.late_purchases = 0
        self.sampled_out = 0
        self.invalid_purchases = 0
        self.late_predictions = 0
        self.unreadable_predictions = 0
        self.last_label_wall_s: float | None = None
        # The checkpoint's watermark: replayed predictions due by then were counted before the restart.
        self.checkpoint_watermark_us: int | None = None
        self._labels = 0
        self._wall_clock = wall_clock

    @property
    def watermark_us(self) -> int | None:
        if self.max_event_time_us is None:
            return None
        return self.max_event_time_us - self.late_allowance_us

    def restore(self, snapshot: QualitySnapshot) -> None:
        """Take the counters of a checkpoint; the records read again after it rebuild the rest."""
        self.late_purchases = snapshot.late_purchases
        self.sampled_out = snapshot.sampled_out
        self.invalid_purchases = snapshot.invalid_purchases
        self.late_predictions = snapshot.late_predictions
        self.unreadable_predictions = snapshot.unreadable_predictions
        self.checkpoint_watermark_us = None if snapshot.watermark is None else micros(snapshot.watermark)
        for model in snapshot.models:
            book = self._book(model.model_version, model.role)
            book.positive = model.labelled_positive
            book.negative = model.labelled - min(model.labelled_positive, model.labelled)
            book.restored_window_start_us = None if model.window_start is None else micros(model.window_start)

    def prediction(self, prediction: Prediction, role: str, *, replayed: bool = False) -> None:
        at_us = micros(prediction.timestamp)
        watermark = self.watermark_us
        if watermark is not None and at_us + self.label_window_us <= watermark:
            # Its label time has passed: the purchases it needs may be forgotten, and a repeat of one
            # already labelled lands here too. Counted, never labelled.
            if not replayed:
                self.late_predictions += 1
        else:
            pending = PendingPrediction(
                at_us, prediction.event_id, role, prediction.user_id, prediction.purchase_probability, prediction.model_version, replayed
            )
            admission, let_go = self.pending.admit(pending)
            if not replayed:
                self.sampled_out += let_go + (admission is Admission.SAMPLED_OUT)
        self._advance(at_us)

    def purchase(self, purchase: Purchase, *, replayed: bool = False) -> None:
        at_us = micros(purchase.timestamp)
        watermark = self.watermark_us
        if watermark is not None and at_us <= watermark:
            if not replayed:
                self.late_purchases += 1
            if at_us <= watermark - self.label_window_us:
                return  # every prediction it could make positive was labelled already
        self.purchases.add(purchase.user_id, at_us)
        self._advance(at_us)

    def invalid_purchase(self, *, replayed: bool = False) -> None:
        if not replayed:
            self.invalid_purchases += 1

    def unreadable_prediction(self, *, replayed: bool = False) -> None:
        if not replayed:
            self.unreadable_predictions += 1

    def snapshot(
        self, at: datetime, *, training_auc: Callable[[str], float | None] = lambda version: None,
        positions: Iterable[PartitionPosition] = (), remeasure: bool = True,
    ) -> QualitySnapshot:
        """The figures and counters now. `remeasure` computes the windows' figures again (once per
        snapshot interval); without it, the last ones computed are given."""
        models = []
        for book in sorted(self.books.values(), key=lambda b: (b.role, b.model_version)):
            quality = book.quality(remeasure)
            start_us = book.window_start_us()
            models.append(ModelQuality(
                model_version=book.model_version, role=cast(Role, book.role),
                training_auc=training_auc(book.model_version), labelled=book.labelled, window=quality.count,
                auc=quality.auc, log_loss=quality.log_loss, brier=quality.brier, ece=quality.ece,
                mean_probability=quality.mean_probability, positive_rate=quality.positive_rate,
                labelled_positive=book.positive, window_start=None if start_us is None else from_micros(start_us),
            ))
        # Never behind the checkpoint's: a snapshot taken while the replay catches up is a checkpoint too.
        marks = [mark for mark in (self.watermark_us, self.checkpoint_watermark_us) if mark is not None]
        return QualitySnapshot(
            at=at, watermark=from_micros(max(marks)) if marks else None, pending=len(self.pending),
            late_purchases=self.late_purchases, sampled_out=self.sampled_out, models=tuple(models),
            invalid_purchases=self.invalid_purchases, late_predictions=self.late_predictions,
            unreadable_predictions=self.unreadable_predictions, positions=tuple(positions),
        )

    def _advance(self, event_time_us: int) -> None:
        if self.max_event_time_us is not None and event_time_us <= self.max_event_time_us:
            return
        self.max_event_time_us = event_time_us
        watermark = event_time_us - self.late_allowance_us
        due = self.pending.pop_due(watermark - self.label_window_us)
        if due:
            self._label(due)
        self.purchases.forget_until(watermark - self.label_window_us)

    def _label(self, due: list[PendingPrediction]) -> None:
        window_us, counted_until = self.label_window_us, self.checkpoint_watermark_us
        for prediction in due:
            at_us = prediction.event_time_us
            positive = self.purchases.any_within(prediction.user_id, at_us, at_us + window_us)
            book = self._book(prediction.model_version, prediction.role)
            book.window.push(prediction.probability, positive, at_us)
            self._labels += 1
            book.last_labelled = self._labels
            if prediction.replayed and counted_until is not None and at_us + window_us <= counted_until:
                continue  # counted before the restart
            if positive:
                book.positive += 1
            else:
                book.negative += 1
        self.last_label_wall_s = self._wall_clock()

    def _book(self, model_version: str, role: str) -> ModelBook:
        key = (model_version, role)
        book = self.books.get(key)
        if book is None:
            if len(self.books) >= self.max_models:
                del self.books[min(self.books, key=lambda k: self.books[k].last_labelled)]
            book = self.books[key] = ModelBook(model_version, role, LabelledWindow(self.window_size))
        return book
