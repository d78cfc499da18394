"""The ROC AUC each model version reached on held-out events when it was trained, for comparison with
its live AUC: read from the version's model.json (or its MLflow run) at MODEL_URI and SHADOW_MODEL_URI,
without unpickling the model.

A version's record never changes, so a value once found is kept. A version not found (not in the
registry, no model.json, MLflow away) is unknown (None) and looked up again at most once a minute.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from errors import PredictionError
from model.artifact import metadata_path
from model.local_registry import METADATA_NAME, LocalRegistry
from model.sources import is_models_uri, local_path

log = logging.getLogger(__name__)

RETRY_UNKNOWN_S = 60.0


def recorded_training_aucs(uri: str, versions: Collection[str], mlflow_tracking_uri: str = "") -> dict[str, float]:
    """The recorded held-out ROC AUC of each of `versions` that the model source at `uri` knows. Blocking."""
    if is_models_uri(uri):
        from model.mlflow_registry import list_versions, parse_models_uri

        name, _alias = parse_models_uri(uri)
        aucs = {row.get("local_version"): _number(row.get("roc_auc")) for row in list_versions(mlflow_tracking_uri, name)}
        return {version: auc for version, auc in aucs.items() if isinstance(version, str) and version in versions and auc is not None}
    path = local_path(uri)
    if path.suffix == ".joblib":
        metadata = _read_json(metadata_path(path))
        auc, version = _metrics_auc(metadata), metadata.get("version")
        return {version: auc} if isinstance(version, str) and version in versions and auc is not None else {}
    registry, found = LocalRegistry(path), {}
    for version in versions:
        try:
            version_dir = registry.version_dir(version)
        except PredictionError:
            continue  # not a version name this registry can hold
        auc = _metrics_auc(_read_json(version_dir / METADATA_NAME))
        if auc is not None:
            found[version] = auc
    return found


class TrainingAucs:
    """What each version's training AUC is, as far as looked up; lookups run in a worker thread."""

    def __init__(
        self, uris: Sequence[str], mlflow_tracking_uri: str = "", retry_s: float = RETRY_UNKNOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uris = [uri for uri in uris if uri]
        self.mlflow_tracking_uri = mlflow_tracking_uri
        self.retry_s = retry_s
        self._clock = clock
        self._known: dict[str, float] = {}
        self._tried_at: dict[str, float] = {}

    def get(self, version: str) -> float | None:
        return self._known.get(version)

    def wanted(self, versions: Collection[str]) -> list[str]:
        """Those of `versions` unknown and not looked up within the last `retry_s`."""
        now = self._clock()
        return sorted(v for v in versions if v not in self._known and now - self._tried_at.get(v, -self.retry_s) >= self.retry_s)

    def look_up(self, versions: Collection[str]) -> None:
        """Look the versions up in every model source. Blocking; a source that fails is logged and skipped."""
        now = self._clock()
        for version in versions:
            self._tried_at[version] = now
        missing = set(versions)
        for uri in self.uris:
            if not missing:
                break
            try:
                found = recorded_training_aucs(uri, missing, self.mlflow_tracking_uri)
            except Exception as exc:  # noqa: BLE001 - an unknown training AUC is shown as null; the monitor goes on
                log.warning("cannot read the training AUC of %s from %s (looked up again within %.0f s): %s",
                            ", ".join(sorted(missing)), uri, self.retry_s, exc)
                continue
            self._known.update(found)
            missing -= set(found)

    async def refresh(self, versions: Collection[str]) -> None:
        wanted = self.wanted(versions)
        if wanted and self.uris:
            await asyncio.to_thread(self.look_up, wanted)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.debug("unreadable %s: %s", path, exc)
        return {}
    return document if isinstance(document, dict) else {}


def _metrics_auc(metadata: dict[str, Any]) -> float | None:
    metrics = metadata.get("metrics")
    return _number(metrics.get("roc_auc")) if isinstance(metrics, dict) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
