"""Saving and loading the trained model: `model.joblib` plus a readable `model.json` beside it."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.pipeline import Pipeline

from errors import SetupError
from model.features import FEATURE_COLUMNS, feature_frame
from model.scorer import PARITY_TOLERANCE, FoldedScorer, fold_pipeline, largest_difference
from offline_store.features import UserFeatures


class ModelArtifactError(SetupError):
    """The model artifact is missing, unreadable or was built by another scikit-learn."""


@dataclass(frozen=True)
class PurchaseModel:
    """A trained Pipeline and what it was trained with, plus its folded numpy form when it has one."""

    pipeline: Pipeline
    version: str
    sklearn_version: str
    features: tuple[str, ...]
    scorer: FoldedScorer | None = None

    def predict(self, pages: Sequence[tuple[str, str, str]], users: Sequence[UserFeatures]) -> np.ndarray:
        """Purchase probabilities, one per event: the folded scorer when there is one, else the Pipeline."""
        if self.scorer is None:
            return self.predict_with_pipeline(pages, users)
        width = len(UserFeatures._fields)
        table = np.fromiter(itertools.chain.from_iterable(users), np.float64, len(users) * width).reshape(-1, width)
        return self.scorer.score(pages, table[:, 0], table[:, 1], table[:, 2], table[:, 3])

    def predict_with_pipeline(self, pages: Sequence[tuple[str, str, str]], users: Sequence[UserFeatures]) -> np.ndarray:
        """`predict_proba` of the saved Pipeline: the reference, and the training path. CPU-bound."""
        return self.pipeline.predict_proba(feature_frame(pages, users))[:, 1]

    def with_fast_path(self) -> PurchaseModel:
        """This model with its folded scorer, checked against predict_proba; unchanged if it cannot be folded.

        Raises ModelArtifactError when the two disagree by more than PARITY_TOLERANCE: serving
        numbers that differ from the trained model's is worse than not serving.
        """
        scorer = fold_pipeline(self.pipeline)
        if scorer is None:
            return self

        def reference(pages, table):
            return self.predict_with_pipeline(pages, [UserFeatures(*row) for row in table])

        difference = largest_difference(scorer, reference, list(scorer.page_index))
        if not difference <= PARITY_TOLERANCE:
            raise ModelArtifactError(
                f"the folded scorer differs from predict_proba by {difference:.3g} (more than {PARITY_TOLERANCE:g}); refusing to serve"
            )
        return dataclasses.replace(self, scorer=scorer)


def metadata_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def save_model(model: PurchaseModel, model_path: Path, metadata: dict[str, Any]) -> None:
    """Write the artifact and its JSON atomically, so a reader never sees half a file."""
    model_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "pipeline": model.pipeline,
        "version": model.version,
        "sklearn_version": model.sklearn_version,
        "features": list(model.features),
    }
    _write_atomically(model_path, lambda f: joblib.dump(payload, f))
    text = json.dumps(metadata, indent=2, sort_keys=True) + "\n"
    _write_atomically(metadata_path(model_path), lambda f: f.write(text.encode()))


def _write_atomically(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_model(model_path: Path) -> PurchaseModel:
    """Load an artifact written by `save_model`, refusing one built by another scikit-learn."""
    if not model_path.is_file():
        raise ModelArtifactError(f"no model at {model_path}: train one with `make train` (python -m model.train)")
    built_with = _sklearn_version_in_metadata(model_path)
    if built_with is not None and built_with != sklearn.__version__:
        raise _version_mismatch(model_path, built_with)
    try:
        with warnings.catch_warnings():
            # The version check below gives a clearer message than sklearn's pickle warning.
            warnings.simplefilter("ignore", sklearn.exceptions.InconsistentVersionWarning)
            payload = joblib.load(model_path)
    except Exception as exc:
        raise ModelArtifactError(f"cannot read the model at {model_path}: {exc}") from exc
    if not isinstance(payload, dict) or not {"pipeline", "version", "sklearn_version", "features"} <= payload.keys():
        raise ModelArtifactError(f"{model_path} is not a model artifact written by model.train")
    if payload["sklearn_version"] != sklearn.__version__:
        raise _version_mismatch(model_path, payload["sklearn_version"])
    if tuple(payload["features"]) != FEATURE_COLUMNS:
        raise ModelArtifactError(
            f"{model_path} expects features {payload['features']}, this code builds {list(FEATURE_COLUMNS)}: retrain it"
        )
    model = PurchaseModel(
        pipeline=payload["pipeline"],
        version=payload["version"],
        sklearn_version=payload["sklearn_version"],
        features=tuple(payload["features"]),
    )
    return model.with_fast_path()


def _sklearn_version_in_metadata(model_path: Path) -> str | None:
    try:
        return json.loads(metadata_path(model_path).read_text())["sklearn_version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _version_mismatch(model_path: Path, built_with: str) -> ModelArtifactError:
    return ModelArtifactError(
        f"{model_path} was built with scikit-learn {built_with} but {sklearn.__version__} is installed;"
        " pickled models are only safe to load with the version that wrote them: retrain with `make train`"
    )
