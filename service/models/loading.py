"""Loading a model from its source: fetch, check (model/artifact.py) and warm, all off the event loop."""

from __future__ import annotations

import asyncio

import numpy as np

from model.artifact import PurchaseModel, load_model
from model.candidate import Candidate
from model.sources import ModelSource


def load_candidate(candidate: Candidate) -> PurchaseModel:
    """Blocking: checksum before unpickling, then scikit-learn version, contract, gates and parity."""
    model = load_model(candidate.artifact_path, expected_sha256=candidate.expected_sha256)
    # The first call into sklearn pays for lazy imports and allocations; pay it before the first event.
    model.predict([(model.contract.other_page,) * 3], [None], np.zeros(1))
    return model


async def fetch_and_load(source: ModelSource) -> tuple[PurchaseModel, Candidate]:
    """In worker threads, so the loop keeps polling, heartbeating and serving meanwhile."""
    candidate = await asyncio.to_thread(source.fetch)
    return await asyncio.to_thread(load_candidate, candidate), candidate
