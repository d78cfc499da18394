"""A deliberately degraded model for the quality tests: a trained artifact with its page effects reversed.

The copy keeps everything else, including the model.json that recorded the original's held-out metrics, so it
loads, passes its gates and folds like any accepted version, while it ranks events worse than it claims: what a
model broken after its evaluation (a feature mix-up, a bad merge of coefficients) looks like from outside.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np

from features.contract import PAGE_COLUMNS
from model.artifact import ARTIFACT_FILE, load_model, read_metadata, save_model

DEGRADED_SUFFIX = "-pages-reversed"


def reverse_ranks(effects: np.ndarray) -> np.ndarray:
    """The same values, reassigned so that the largest goes where the smallest was, and so on."""
    order = np.argsort(effects, kind="stable")
    reversed_effects = np.empty_like(effects)
    reversed_effects[order] = effects[order[::-1]]
    return reversed_effects


def degrade(artifact: Path, directory: Path) -> Path:
    """Save under `directory` a copy of the logistic-regression model at `artifact` whose page effects are reversed
    within each page position (the page most telling of a purchase gets the effect of the least telling, and so on),
    as version `<original>-pages-reversed`; returns the copy's model.joblib.

    The effects are permuted on the scale the model applies them (coefficient over the scaler's divisor), so each
    page gets exactly another page's effect. model.json's metrics stay the original's.
    """
    original = load_model(artifact)
    pipeline = copy.deepcopy(original.pipeline)
    classifier, scale = pipeline.named_steps["classifier"], pipeline.named_steps["scale"].scale_
    names = list(pipeline.named_steps["columns"].get_feature_names_out())
    for column in PAGE_COLUMNS:
        block = [i for i, name in enumerate(names) if name.startswith(f"pages__{column}_")]
        assert len(block) == len(original.contract.pages), f"{column}: {len(block)} one-hot columns in {names}"
        effects = classifier.coef_[0, block] / scale[block]
        classifier.coef_[0, block] = reverse_ranks(effects) * scale[block]
    version = original.version + DEGRADED_SUFFIX
    metadata = {key: value for key, value in read_metadata(artifact).items() if key != "artifact_sha256"}
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / ARTIFACT_FILE
    save_model(dataclasses.replace(original, pipeline=pipeline, version=version, scorer=None), target, {**metadata, "version": version})
    return target
