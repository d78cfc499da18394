"""Train the purchase model on labelled synthetic events joined with the offline store.

    python -m model.train [--estimator logistic_regression] [--promote] [--samples 60000] [--users 10000] [--seed 7]

Writes a new version to MODEL_URI (a local registry directory by default, or a model file) with
model.json and a report (report.html, report.png) beside it, but only if it passes its gates:
held-out ROC AUC within 0.02 of the oracle's (the AUC of the true probabilities) and expected
calibration error at most 0.02. `--promote` makes it the version that serves. With
MLFLOW_TRACKING_URI set it also logs the run to MLflow and registers the version there (and,
with `--promote` and MODEL_URI=models:/NAME@ALIAS, moves the alias).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql

from config import Settings
from config.values import MLFLOW_MODEL_PREFIX, PROJECT_ROOT
from errors import SetupError
from features.contract import FeatureContract
from features.user import UserFeatures
from model.artifact import ARTIFACT_FILE, copy_atomically, metadata_path, save_model
from model.dataset import make_labelled_data
from model.estimators import DEFAULT_ESTIMATOR, ESTIMATORS
from model.evaluation import DEFAULT_GATES, Trained, train_and_evaluate
from model.report import write_report
from offline_store.mysql import MySQLFeatureStore, close_pool, create_pool
from runtime.startup import start_program

# Named explicitly: run with `python -m`, this module's __name__ is "__main__".
log = logging.getLogger("model.train")

DEFAULT_REGISTRY = PROJECT_ROOT / "model" / "registry"
MLFLOW_DEFAULT_NAME = "purchase-model"


async def fetch_store(settings: Settings) -> tuple[dict[int, UserFeatures], float | None]:
    """Every user's features, and when the store was built (seconds since the epoch)."""
    pool = await create_pool(settings)
    try:
        store = MySQLFeatureStore(pool, settings.mysql_query_timeout_ms)
        return await store.get_all_features(), await store.built_at_s()
    finally:
        await close_pool(pool)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    settings = start_program()
    started = time.perf_counter()
    try:
        known_users, built_at_s = asyncio.run(fetch_store(settings))
    except SetupError as exc:  # a setting to fix (a MYSQL_SSL_* file, TLS refused): its message, not a traceback
        log.error("%s", exc)
        return exc.exit_code
    except pymysql.err.MySQLError as exc:
        log.error("cannot read user features from MySQL at %s:%s: %s (run `make up` and"
                  " `python -m offline_store.loader` first)", settings.mysql_host, settings.mysql_port, exc)
        return 1
    if built_at_s is None:
        built_at_s = time.time()
    log.info("read features of %d users from the offline store", len(known_users))
    data = make_labelled_data(FeatureContract(), known_users, args.users, args.samples, args.seed, built_at_s)
    log.info("generated %d labelled events (%.1f%% purchases); training %s", len(data.labels), 100 * data.labels.mean(),
             args.estimator)
    gates = {"max_auc_gap_to_oracle": args.max_auc_gap, "max_ece": args.max_ece}
    trained = train_and_evaluate(data, args.seed, args.estimator, FeatureContract(), gates)
    metadata = _metadata(trained, args)
    home = _local_home(settings.model_uri)
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".training-", dir=home) as staging:
        model_path = Path(staging) / ARTIFACT_FILE
        save_model(trained.model, model_path, metadata)
        report = write_report(Path(staging), trained.evaluation)
        files = [model_path, metadata_path(model_path), *report]
        m = trained.metrics
        summary = (f"ROC AUC {m['roc_auc']:.4f} (oracle {m['oracle_roc_auc']:.4f}), ECE {m['ece']:.4f},"
                   f" log loss {m['log_loss']:.4f}, Brier {m['brier_score']:.4f}")
        if not trained.passed:
            kept = _keep_rejected(home, trained.model.version, files)
            failed = [f"{name} {value:.4f} > {limit:g}" for name, (value, limit, ok) in trained.evaluation.gates.items() if not ok]
            log.error("model %s rejected (%s): %s; nothing registered, its report is in %s",
                      trained.model.version, ", ".join(failed), summary, kept)
            return 1
        where = _publish(settings, args.promote, model_path, files, trained)
    log.info("model %s accepted: %s; %s in %.1f s", trained.model.version, summary, where, time.perf_counter() - started)
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--estimator", choices=sorted(ESTIMATORS), default=DEFAULT_ESTIMATOR,
                        help=f"the model family (default {DEFAULT_ESTIMATOR}; add one in model/estimators.py)")
    parser.add_argument("--promote", action="store_true", help="make the new version the one that serves")
    parser.add_argument("--samples", type=int, default=60_000, help="labelled events to generate (default 60000)")
    parser.add_argument("--users", type=int, default=10_000, help="user ids 0..N-1 to draw events for (default 10000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--max-auc-gap", type=float, default=DEFAULT_GATES["max_auc_gap_to_oracle"],
                        help="gate: how far the held-out ROC AUC may fall below the oracle's (default %(default)s)")
    parser.add_argument("--max-ece", type=float, default=DEFAULT_GATES["max_ece"],
                        help="gate: the largest expected calibration error, 10 bins (default %(default)s)")
    args = parser.parse_args(argv)
    if args.samples < 1_000 or args.users < 1:
        parser.error("--samples must be at least 1000 and --users at least 1")
    return args


def _metadata(trained: Trained, args: argparse.Namespace) -> dict[str, Any]:
    model = trained.model
    return {
        "version": model.version,
        "estimator": model.estimator,
        "sklearn_version": model.sklearn_version,
        "contract": model.contract.to_dict(),
        "metrics": trained.metrics,
        "gates": trained.gates,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "training": {"samples": args.samples, "users": args.users, "seed": args.seed},
    }


def _is_file_uri(uri: str) -> bool:
    return uri.endswith(".joblib")


def _local_home(uri: str) -> Path:
    """Where the new version is staged: the registry itself, the model file's folder, or (for an
    MLflow model) the default local registry, which keeps a copy of every version."""
    if uri.startswith(MLFLOW_MODEL_PREFIX):
        return DEFAULT_REGISTRY
    return Path(uri).parent if _is_file_uri(uri) else Path(uri)


def _keep_rejected(home: Path, version: str, files: list[Path]) -> Path:
    """A rejected model is kept apart from the registry's versions, for its report, never to serve."""
    kept = home / "rejected" / version
    kept.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copy2(path, kept / path.name)
    return kept


def _publish(settings: Settings, promote: bool, model_path: Path, files: list[Path], trained: Trained) -> str:
    """Hand the staged version to MODEL_URI (and MLflow); says where it went."""
    from model.local_registry import LocalRegistry

    uri, version = settings.model_uri, trained.model.version
    said = []
    if _is_file_uri(uri):
        target = Path(uri)
        for path in files:  # the artifact last: a watcher sees its new model.json first
            if path != model_path:
                copy_atomically(path, target.parent / (metadata_path(target).name if path.suffix == ".json" else path.name))
        copy_atomically(model_path, target)
        said.append(f"wrote {target}")
    else:
        registry = LocalRegistry(_local_home(uri))
        registry.register(model_path, extra_files=[path for path in files if path not in (model_path, metadata_path(model_path))])
        said.append(f"registered in {registry.root}")
        if promote and not uri.startswith(MLFLOW_MODEL_PREFIX):
            registry.promote(version)
            said.append("promoted: it serves now")
    if settings.mlflow_tracking_uri:
        said.append(_register_in_mlflow(settings, promote, model_path.parent, trained))
    return "; ".join(said)


def _register_in_mlflow(settings: Settings, promote: bool, version_dir: Path, trained: Trained) -> str:
    from model import mlflow_registry

    uri = settings.model_uri
    name, alias = mlflow_registry.parse_models_uri(uri) if uri.startswith(MLFLOW_MODEL_PREFIX) else (MLFLOW_DEFAULT_NAME, "")
    params = {"estimator": trained.model.estimator, "version": trained.model.version, **{f"gate.{k}": v for k, v in trained.gates.items()}}
    number = mlflow_registry.register_version(settings.mlflow_tracking_uri, name, version_dir, params, trained.metrics)
    said = f"registered in MLflow as {name} version {number}"
    if promote and alias:
        mlflow_registry.set_alias(settings.mlflow_tracking_uri, name, alias, number)
        said += f", alias {alias} moved to it"
    return said


if __name__ == "__main__":
    raise SystemExit(main())
