"""The model serving now, the shadow beside it, and the checked versions waiting to replace them.

A watcher (service/models/watch.py) fills `pending` from a worker thread's result; the loop
calls `swap()` between batches, after the work in hand is committed, so no batch and no
transaction holds outputs of two versions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from model.artifact import PurchaseModel
from service.observe.model_stats import ModelStats

log = logging.getLogger(__name__)

SERVING = "serving"
SHADOW = "shadow"


@dataclass
class Pending:
    model: PurchaseModel
    fingerprint: str
    label: str


@dataclass
class ModelSlot:
    role: str
    model: PurchaseModel | None  # the shadow's may be None until a version loads
    fingerprint: str | None
    pending: Pending | None = None


class ServingModels:
    def __init__(self, serving: ModelSlot, shadow: ModelSlot | None, stats: ModelStats) -> None:
        assert serving.model is not None
        self.serving_slot = serving
        self.shadow_slot = shadow
        self._stats = stats
        stats.serving_version = serving.model.version
        stats.shadow_version = shadow.model.version if shadow is not None and shadow.model is not None else None

    @classmethod
    def of(cls, model: PurchaseModel, shadow: PurchaseModel | None = None) -> ServingModels:
        """Fixed models, nothing watched: for tools and tests."""
        shadow_slot = None if shadow is None else ModelSlot(SHADOW, shadow, None)
        return cls(ModelSlot(SERVING, model, None), shadow_slot, ModelStats())

    @property
    def serving(self) -> PurchaseModel:
        model = self.serving_slot.model
        assert model is not None
        return model

    @property
    def shadow(self) -> PurchaseModel | None:
        return None if self.shadow_slot is None else self.shadow_slot.model

    def swap_due(self) -> bool:
        return any(slot.pending is not None for slot in self._slots())

    def swap(self) -> None:
        """Put every checked version in place; called between batches with nothing in hand."""
        for slot in self._slots():
            pending, slot.pending = slot.pending, None
            if pending is None:
                continue
            old = slot.model.version if slot.model is not None else "none"
            slot.model, slot.fingerprint = pending.model, pending.fingerprint
            self._stats.swaps[slot.role] += 1
            if slot.role == SERVING:
                self._stats.serving_version = pending.model.version
            else:
                self._stats.shadow_version = pending.model.version
            log.info("%s model is now %s (was %s), from %s", slot.role, pending.model.version, old, pending.label)

    def _slots(self) -> list[ModelSlot]:
        return [self.serving_slot] if self.shadow_slot is None else [self.serving_slot, self.shadow_slot]
