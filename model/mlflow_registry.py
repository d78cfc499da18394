"""The MLflow side of the model registry: a model served as `models:/NAME@ALIAS`, registered from training,
and its alias moved forward (promote) or back (rollback).

A registered version is a run of the experiment "purchase-model" whose artifacts under `model/` are the files of
a local version directory (model.joblib, model.json, the report), and whose version tag `artifact_sha256` records
the checksum the loader checks before unpickling. The service reads a version by downloading its model.joblib and
model.json into a cache directory keyed by name and version; versions never change once registered, so a
complete copy in the cache is not downloaded again.

MLflow keeps no history of an alias, so each move made here is recorded in a registered-model tag,
`alias_history.<alias>` (a JSON list, most recent first), which rollback pops.

An MLflow client retries a failed request 7 times with exponential backoff and waits 120 s for an answer by
default: minutes before an unreachable server surfaces. Unless the operator set them, the client's HTTP knobs
are lowered here so that one call fails within about ten seconds, as `MlflowUnavailable`; the caller (the
service's model watcher, a command line) retries at its own pace.

mlflow takes seconds to import and only `models:/` users need it, so it is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.values import PROJECT_ROOT
from errors import PredictionError, SetupError
from model.candidate import Candidate

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

MODELS_URI_PREFIX = "models:/"
EXPERIMENT_NAME = "purchase-model"
RUN_ARTIFACT_DIR = "model"
ARTIFACT_NAME = "model.joblib"
METADATA_NAME = "model.json"
CHECKSUM_TAG = "artifact_sha256"
HISTORY_TAG_PREFIX = "alias_history."
# Enough to step back through a long run of promotions, well under MLflow's 5000-character tag values.
HISTORY_LIMIT = 50
DEFAULT_CACHE_DIR = PROJECT_ROOT / "model" / "artifacts" / "mlflow-cache"
# Metrics shown by list_versions: the ones a rollback decision is read from.
LISTED_METRICS = ("roc_auc", "ece")

# One retry after a short pause, and an answer within 4 s of silence: at worst about 10 s per call.
CLIENT_ENVIRONMENT = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "4",
    # The service talks to its own tracking server only: no usage reports to third parties, and
    # no "View run at" lines in the trainer's output.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}

# A name becomes a cache directory: no path separators, no leading dot. Aliases are what MLflow accepts.
MODELS_URI = re.compile(r"models:/(?P<name>[A-Za-z0-9_-][A-Za-z0-9._ -]*)@(?P<alias>[A-Za-z0-9_-]+)")
ALIAS = re.compile(r"[A-Za-z0-9_-]+")
VERSION_NUMBER = re.compile(r"[1-9][0-9]*")


class MlflowUriError(SetupError, ValueError):
    """A model URI that is not `models:/NAME@ALIAS`."""


class MlflowRegistryError(SetupError):
    """MLflow answered, and refused: no such model, alias or version, a missing checksum, nothing to roll back to."""


class MlflowUnavailable(PredictionError):
    """The MLflow tracking server cannot be reached or fails: an outage, retried."""

    retriable = True


def parse_models_uri(uri: str) -> tuple[str, str]:
    """(NAME, ALIAS) of `models:/NAME@ALIAS`."""
    match = MODELS_URI.fullmatch(uri.strip())
    if match is None:
        raise MlflowUriError(
            f"{uri!r} is not an MLflow model URI of the form models:/NAME@ALIAS (for example models:/purchase-model@champion); "
            "NAME is letters, digits, '.', '_', '-' and spaces, ALIAS letters, digits, '_' and '-'"
        )
    return match["name"], match["alias"]


class MlflowSource:
    """The version an MLflow alias points at; it changes when the alias is moved."""

    def __init__(self, uri: str, *, tracking_uri: str, cache_dir: Path | None = None) -> None:
        self.uri = uri.strip()
        self.name, self.alias = parse_models_uri(self.uri)
        if not tracking_uri.strip():
            raise MlflowRegistryError(f"MLFLOW_TRACKING_URI is empty but the model is {self.uri}: set it to the MLflow tracking server")
        self.tracking_uri = tracking_uri.strip()
        self.cache_dir = DEFAULT_CACHE_DIR if cache_dir is None else cache_dir

    def fingerprint(self) -> str:
        """The version number the alias points at."""
        return str(self._aliased_version().version)

    def fetch(self) -> Candidate:
        """The aliased version's model.joblib, downloaded into the cache unless a complete copy is there."""
        version = self._aliased_version()
        number = str(version.version)
        expected = version.tags.get(CHECKSUM_TAG) or None
        target = self.cache_dir / self.name / number
        if not _complete_copy(target, expected):
            if not version.source:
                raise MlflowRegistryError(f"version {number} of {self.name} has no source to download its files from")
            self._download(version.source, target, expected)
        return Candidate(target / ARTIFACT_NAME, expected, number, f"{self.uri} (version {number})")

    def _aliased_version(self) -> ModelVersion:
        client = _client(self.tracking_uri)
        with _mlflow_errors(self.tracking_uri, f"looking up {self.uri}", "set the alias with `python -m model.registry promote VERSION`"):
            return client.get_model_version_by_alias(self.name, self.alias)

    def _download(self, source: str, target: Path, expected_sha256: str | None) -> None:
        from mlflow.artifacts import download_artifacts

        # Downloaded beside the target and renamed into place: a copy in the cache is complete or absent.
        target.parent.mkdir(parents=True, exist_ok=True)
        incoming = target.parent / f".incoming-{secrets.token_hex(6)}"
        incoming.mkdir()
        try:
            for file_name in (ARTIFACT_NAME, METADATA_NAME):
                doing, hint = f"downloading {file_name} of {self.uri} from {source}", f"the version must hold {file_name}"
                with _mlflow_errors(self.tracking_uri, doing, hint):
                    download_artifacts(artifact_uri=f"{source.rstrip('/')}/{file_name}", dst_path=str(incoming),
                                       tracking_uri=self.tracking_uri)
            if target.exists():
                shutil.rmtree(target)  # an incomplete or damaged copy
            try:
                os.replace(incoming, target)
            except OSError:
                if not _complete_copy(target, expected_sha256):
                    raise
                # Another process put the same version in place meanwhile.
        finally:
            shutil.rmtree(incoming, ignore_errors=True)


def register_version(tracking_uri: str, name: str, version_dir: Path, params: Mapping[str, object], metrics: Mapping[str, float]) -> str:
    """Log a run of the experiment "purchase-model" with `params`, `metrics` and every file of `version_dir` as artifacts
    under model/, register it as a new version of `name` tagged with the checksum of version_dir/model.json, and return
    the version number."""
    checksum = _recorded_checksum(version_dir)
    from mlflow.entities import Metric, Param

    client = _client(tracking_uri)
    now_ms = int(time.time() * 1000)
    with _mlflow_errors(tracking_uri, f"registering {version_dir.name} as a version of {name}"):
        experiment_id = _experiment_id(client)
        run = client.create_run(experiment_id, run_name=version_dir.name)
        run_id = run.info.run_id
        try:
            client.log_batch(run_id, metrics=[Metric(key, float(value), now_ms, 0) for key, value in metrics.items()],
                             params=[Param(key, str(value)) for key, value in params.items()])
            client.log_artifacts(run_id, str(version_dir), artifact_path=RUN_ARTIFACT_DIR)
        except BaseException:
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id)
        _ensure_registered_model(client, name)
        version = client.create_model_version(name, f"{run.info.artifact_uri}/{RUN_ARTIFACT_DIR}", run_id=run_id,
                                              tags={CHECKSUM_TAG: checksum, "local_version": version_dir.name})
    return str(version.version)


def set_alias(tracking_uri: str, name: str, alias: str, version: str) -> None:
    """Point `alias` at `version`, remembering where it pointed for rollback_alias."""
    _check_alias(alias)
    if not VERSION_NUMBER.fullmatch(str(version)):
        raise MlflowRegistryError(f"{version!r} is not an MLflow model version: versions of {name} are numbered 1, 2, 3, ...")
    client = _client(tracking_uri)
    hint = f"`python -m model.registry list` shows the versions of {name}"
    with _mlflow_errors(tracking_uri, f"moving {name}@{alias} to version {version}", hint):
        model = client.get_registered_model(name)
        previous = model.aliases.get(alias)
        history = _history(model.tags, alias)
        client.set_registered_model_alias(name, alias, str(version))
        if previous is not None and previous != str(version):
            # Recorded after the move: a failure in between loses one step of history, never moves the alias back wrongly.
            client.set_registered_model_tag(name, HISTORY_TAG_PREFIX + alias, json.dumps([previous, *history][:HISTORY_LIMIT]))


def rollback_alias(tracking_uri: str, name: str, alias: str) -> str:
    """Point `alias` back at the version it pointed at before its last move made by set_alias; return that version."""
    _check_alias(alias)
    client = _client(tracking_uri)
    with _mlflow_errors(tracking_uri, f"rolling back {name}@{alias}"):
        history = _history(client.get_registered_model(name).tags, alias)
        if not history:
            raise MlflowRegistryError(
                f"{name}@{alias} has nothing to roll back to: no earlier version was recorded "
                f"(the tag {HISTORY_TAG_PREFIX}{alias} records moves made by `python -m model.registry promote` and training)"
            )
        previous, rest = history[0], history[1:]
        client.set_registered_model_alias(name, alias, previous)
        client.set_registered_model_tag(name, HISTORY_TAG_PREFIX + alias, json.dumps(rest))
    return previous


def list_versions(tracking_uri: str, name: str) -> list[dict[str, Any]]:
    """Every version of `name`, oldest first: version, aliases, local_version, created_at, run_id and, when its run
    is in the experiment "purchase-model", the metrics of LISTED_METRICS."""
    client = _client(tracking_uri)
    with _mlflow_errors(tracking_uri, f"listing the versions of {name}", "train a model with MLFLOW_TRACKING_URI set to register one"):
        aliases_of: dict[str, list[str]] = {}
        for alias, number in client.get_registered_model(name).aliases.items():
            aliases_of.setdefault(str(number), []).append(alias)
        versions = _all_versions(client, name)
        metrics = _run_metrics(client, [v.run_id for v in versions if v.run_id])
    rows = []
    for version in sorted(versions, key=lambda v: int(v.version)):
        row: dict[str, Any] = {
            "version": str(version.version),
            "aliases": sorted(aliases_of.get(str(version.version), [])),
            "local_version": version.tags.get("local_version", ""),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(version.creation_timestamp / 1000)),
            "run_id": version.run_id or "",
        }
        run_metrics = metrics.get(version.run_id or "", {})
        row.update({key: run_metrics.get(key) for key in LISTED_METRICS})
        rows.append(row)
    return rows


def _client(tracking_uri: str) -> MlflowClient:
    from mlflow import MlflowClient, environment_variables

    for variable, value in CLIENT_ENVIRONMENT.items():
        knob = getattr(environment_variables, variable)
        if not knob.defined:  # read by mlflow at each request; an operator's own value wins
            knob.set(value)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextlib.contextmanager
def _mlflow_errors(tracking_uri: str, doing: str, hint: str = "") -> Iterator[None]:
    """MLflow's errors in the project's terms: what the server refused is a SetupError naming it, anything else
    (no answer, a timeout, a server error) is MlflowUnavailable."""
    from mlflow.exceptions import MlflowException

    refused = f"MLflow at {tracking_uri} refused {doing}: {{}}" + (f"; {hint}" if hint else "")
    unavailable = f"MLflow at {tracking_uri} is unavailable ({doing}): {{}}"
    try:
        yield
    except MlflowException as exc:
        status = exc.get_http_status_code()
        if status >= 500 or status == 429:
            raise MlflowUnavailable(unavailable.format(exc.message)) from exc
        raise MlflowRegistryError(refused.format(exc.message)) from exc
    except OSError as exc:
        # requests' errors are OSErrors; an HTTP error carries the answer, a lost connection does not.
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None and 400 <= status < 500 and status != 429:
            raise MlflowRegistryError(refused.format(exc)) from exc
        raise MlflowUnavailable(unavailable.format(exc)) from exc


def _check_alias(alias: str) -> None:
    if not ALIAS.fullmatch(alias):
        raise MlflowUriError(f"{alias!r} is not an MLflow alias: use letters, digits, '_' and '-' (for example champion)")


def _history(tags: Mapping[str, str], alias: str) -> list[str]:
    raw = tags.get(HISTORY_TAG_PREFIX + alias)
    if not raw:
        return []
    try:
        history = json.loads(raw)
    except json.JSONDecodeError:
        raise MlflowRegistryError(f"the tag {HISTORY_TAG_PREFIX}{alias} is not a JSON list of versions: {raw[:200]!r}; "
                                  "fix or delete it in the MLflow UI") from None
    if not isinstance(history, list):
        raise MlflowRegistryError(f"the tag {HISTORY_TAG_PREFIX}{alias} is not a JSON list of versions: {raw[:200]!r}; "
                                  "fix or delete it in the MLflow UI")
    return [str(version) for version in history]


def _recorded_checksum(version_dir: Path) -> str:
    metadata_file = version_dir / METADATA_NAME
    try:
        checksum = json.loads(metadata_file.read_text(encoding="utf-8")).get(CHECKSUM_TAG)
    except (OSError, ValueError, AttributeError) as exc:
        raise MlflowRegistryError(f"cannot read the checksum of {version_dir} from {metadata_file}: {exc}") from exc
    if not isinstance(checksum, str) or not checksum:
        raise MlflowRegistryError(f"{metadata_file} records no {CHECKSUM_TAG}: save the model with model.artifact.save_model")
    return checksum


def _experiment_id(client: MlflowClient) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(EXPERIMENT_NAME))
    except MlflowException:
        # Another trainer created it in between.
        experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _all_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    versions: list[ModelVersion] = []
    page_token = None
    while True:
        page = client.search_model_versions(f"name = '{_quoted(name)}'", page_token=page_token)
        versions.extend(page)
        page_token = page.token
        if not page_token:
            return versions


def _run_metrics(client: MlflowClient, run_ids: list[str]) -> dict[str, dict[str, float]]:
    """The metrics of the runs among `run_ids` that are in the experiment "purchase-model", in one search per page."""
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None or not run_ids:
        return {}
    wanted = ", ".join(f"'{run_id}'" for run_id in run_ids)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_id IN ({wanted})", max_results=len(run_ids))
    return {run.info.run_id: dict(run.data.metrics) for run in runs}


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _complete_copy(directory: Path, expected_sha256: str | None) -> bool:
    artifact = directory / ARTIFACT_NAME
    if not (artifact.is_file() and (directory / METADATA_NAME).is_file()):
        return False
    # A copy damaged on disk is downloaded again rather than refused by the loader at every poll.
    return expected_sha256 is None or _sha256(artifact) == expected_sha256


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
