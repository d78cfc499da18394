"""Saving and loading a trained model: `model.joblib` plus a readable `model.json` beside it.

Unpickling runs code, so nothing is unpickled before its bytes match the SHA-256 recorded when
the model was saved or registered. After that a model must also pass its feature contract, the
gates recorded in model.json and, when it folds into numpy, parity with `predict_proba`; each
refusal says which check failed (`ModelArtifactError.reason`), so a reload can count them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import joblib
import numpy as np
import sklearn
from sklearn.pipeline import Pipeline

from errors import SetupError
from features.contract import ContractError, FeatureContract
from features.inputs import NumericInputs, Pages, frame_from_inputs, numeric_inputs
from features.user import UserFeatures
from model.scorer import PARITY_TOLERANCE, FoldedScorer, fold_pipeline, largest_difference

ARTIFACT_FILE = "model.joblib"
PAYLOAD_KEYS = frozenset({"pipeline", "version", "estimator", "sklearn_version", "contract"})


class ModelArtifactError(SetupError):
    """A model that must not serve; `reason` is one of missing, checksum, sklearn_version,
    unreadable, contract, gate, parity."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PurchaseModel:
    """A trained Pipeline, the contract it was trained on, and its folded numpy form when it has one."""

    pipeline: Pipeline
    version: str
    estimator: str
    sklearn_version: str
    contract: FeatureContract
    scorer: FoldedScorer | None = None

    def predict(self, pages: Sequence[Pages], users: Sequence[UserFeatures | None], event_at_s: Sequence[float] | np.ndarray) -> np.ndarray:
        """Purchase probabilities, one per event; `users[i]` is None for a cold-start user and
        `event_at_s[i]` is the event's own timestamp. The folded scorer when there is one, else the Pipeline."""
        return self.predict_numbers(pages, numeric_inputs(self.contract, users, event_at_s))

    def predict_numbers(self, pages: Sequence[Pages], numbers: NumericInputs) -> np.ndarray:
        """`predict` on inputs already built by this model's contract (features.inputs.numeric_inputs)."""
        if self.scorer is None:
            return self.predict_inputs(pages, numbers)
        return self.scorer.score(pages, numbers)

    def predict_with_pipeline(
        self, pages: Sequence[Pages], users: Sequence[UserFeatures | None], event_at_s: Sequence[float] | np.ndarray
    ) -> np.ndarray:
        """`predict` through the saved Pipeline, whatever the model folds into: the reference."""
        return self.predict_inputs(pages, numeric_inputs(self.contract, users, event_at_s))

    def predict_inputs(self, pages: Sequence[Pages], numbers: NumericInputs) -> np.ndarray:
        """`predict_proba` of the saved Pipeline: the reference, and the path of unfolded families. CPU-bound."""
        return self.pipeline.predict_proba(frame_from_inputs(self.contract, pages, numbers))[:, 1]

    def with_fast_path(self) -> PurchaseModel:
        """This model with its folded scorer, checked against predict_proba; unchanged if it cannot be folded.

        Serving numbers that differ from the trained model's is worse than not serving.
        """
        scorer = fold_pipeline(self.pipeline, self.contract)
        if scorer is None:
            return self
        cold_days = self.contract.cold_start["days_since_last_purchase"]
        difference = largest_difference(scorer, self.predict_inputs, self.contract.pages, cold_days)
        if not difference <= PARITY_TOLERANCE:
            raise ModelArtifactError(
                "parity", f"the folded scorer differs from predict_proba by {difference:.3g} (more than {PARITY_TOLERANCE:g})"
            )
        return dataclasses.replace(self, scorer=scorer)


def metadata_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(model: PurchaseModel, model_path: Path, metadata: dict[str, Any]) -> str:
    """Write the artifact, then its JSON with the artifact's SHA-256, each atomically; returns the SHA-256."""
    model_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "pipeline": model.pipeline,
        "version": model.version,
        "estimator": model.estimator,
        "sklearn_version": model.sklearn_version,
        "contract": model.contract.to_dict(),
    }
    write_atomically(model_path, lambda f: joblib.dump(payload, f))
    sha256 = file_sha256(model_path)
    text = json.dumps({**metadata, "artifact_sha256": sha256}, indent=2, sort_keys=True) + "\n"
    write_atomically(metadata_path(model_path), lambda f: f.write(text.encode()))
    return sha256


def write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """A reader sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def copy_atomically(source: Path, target: Path) -> None:
    with source.open("rb") as f:
        write_atomically(target, lambda out: shutil.copyfileobj(f, out))


def read_metadata(model_path: Path) -> dict[str, Any]:
    path = metadata_path(model_path)
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelArtifactError("unreadable", f"cannot read {path}: {exc}") from exc
    if not isinstance(metadata, dict):
        raise ModelArtifactError("unreadable", f"{path} is not a JSON object")
    return metadata


def load_model(model_path: Path, *, expected_sha256: str | None = None) -> PurchaseModel:
    """Load and validate an artifact written by `save_model`; ModelArtifactError names what failed."""
    if not model_path.is_file():
        raise ModelArtifactError("missing", f"no model at {model_path}: train one with `make train` (python -m model.train)")
    metadata = read_metadata(model_path)
    expected = expected_sha256 or metadata.get("artifact_sha256")
    if not isinstance(expected, str):
        raise ModelArtifactError("checksum", f"{model_path} has no recorded SHA-256; only artifacts written by model.train load")
    actual = file_sha256(model_path)
    if actual != expected:
        raise ModelArtifactError(
            "checksum", f"{model_path} has SHA-256 {actual[:12]}…, its registration recorded {expected[:12]}…: refusing to unpickle it"
        )
    built_with = metadata.get("sklearn_version")
    if built_with != sklearn.__version__:
        raise _version_mismatch(model_path, str(built_with))
    payload = _unpickle(model_path)
    try:
        contract = FeatureContract.from_dict(payload["contract"])
    except ContractError as exc:
        raise ModelArtifactError("contract", f"{model_path}: {exc}") from exc
    check_gates(model_path, metadata)
    model = PurchaseModel(
        pipeline=payload["pipeline"],
        version=payload["version"],
        estimator=payload["estimator"],
        sklearn_version=payload["sklearn_version"],
        contract=contract,
    )
    return model.with_fast_path()


def _unpickle(model_path: Path) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():
            # The version check above gives a clearer message than sklearn's pickle warning.
            warnings.simplefilter("ignore", sklearn.exceptions.InconsistentVersionWarning)
            payload = joblib.load(model_path)
    except Exception as exc:
        raise ModelArtifactError("unreadable", f"cannot read the model at {model_path}: {exc}") from exc
    if not isinstance(payload, dict) or not payload.keys() >= PAYLOAD_KEYS:
        raise ModelArtifactError("unreadable", f"{model_path} is not a model artifact written by this version of model.train: retrain it")
    if payload["sklearn_version"] != sklearn.__version__:
        raise _version_mismatch(model_path, payload["sklearn_version"])
    return payload


# Each gate: its limit's key in model.json's "gates", and how to measure it from "metrics".
GATES: dict[str, Callable[[dict[str, float]], float]] = {
    "max_auc_gap_to_oracle": lambda metrics: metrics["oracle_roc_auc"] - metrics["roc_auc"],
    "max_ece": lambda metrics: metrics["ece"],
}


def gate_results(metrics: dict[str, float], limits: dict[str, float]) -> dict[str, tuple[float, float, bool]]:
    """Each gate's (measured value, limit, passed)."""
    results = {}
    for name, measure in GATES.items():
        value, limit = float(measure(metrics)), float(limits[name])
        results[name] = (value, limit, value <= limit)
    return results


def check_gates(model_path: Path, metadata: dict[str, Any]) -> None:
    try:
        results = gate_results(metadata["metrics"], metadata["gates"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelArtifactError("gate", f"{metadata_path(model_path)} lacks the metrics or gates to check ({exc!r})") from exc
    failed = [f"{name} {value:.4f} > {limit:g}" for name, (value, limit, passed) in results.items() if not passed]
    if failed:
        raise ModelArtifactError("gate", f"{model_path} fails its gates: {', '.join(failed)}")


def _version_mismatch(model_path: Path, built_with: str) -> ModelArtifactError:
    return ModelArtifactError(
        "sklearn_version",
        f"{model_path} was built with scikit-learn {built_with} but {sklearn.__version__} is installed;"
        " pickled models are only safe to load with the version that wrote them: retrain with `make train`",
    )
