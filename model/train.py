"""Train the purchase model on labelled synthetic events joined with the offline store, or on what was served.

    python -m model.train [--estimator logistic_regression] [--promote] [--samples 60000] [--users 10000] [--seed 7]
    python -m model.train --from-logged [--since ISO-8601 | --hours N] [--holdout-fraction 0.25] [--promote]

Writes a new version to MODEL_URI (a local registry directory by default, or a model file) with
model.json and a report (report.html, report.png) beside it, but only if it passes its gates:
held-out ROC AUC within 0.02 of the oracle's (the AUC of the true probabilities) and expected
calibration error at most 0.02. `--promote` makes it the version that serves. With
MLFLOW_TRACKING_URI set it also logs the run to MLflow and registers the version there (and,
with `--promote` and MODEL_URI=models:/NAME@ALIAS, moves the alias).

`--from-logged` trains on the served events instead (model/logged.py): the predictions on
OUTPUT_TOPIC joined with their events, labelled with the purchases in the offline store, with
features as of each event. The most recent events are held out, and the new version is
registered only if it is not worse there than the serving model (model/comparison.py).

Exit codes: 0 registered; 1 a gate failed (the model is kept under <registry>/rejected/), or Kafka
or MySQL could not be reached; 2 a setting, an argument or a grant to fix; 3 (--from-logged) worse
than the serving model on the hold-out, nothing registered; 4 (--from-logged) not enough served
data: too few labelled events, or one class only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymysql
from aiokafka.errors import KafkaError

from config import Settings
from config.values import MLFLOW_MODEL_PREFIX, PROJECT_ROOT
from errors import PredictionError, SetupError
from features.contract import FeatureContract
from features.user import UserFeatures
from messaging.kafka_security import kafka_refusal
from model import logged
from model.artifact import ARTIFACT_FILE, copy_atomically, metadata_path, save_model
from model.comparison import AUC_TOLERANCE, LOG_LOSS_TOLERANCE, Comparison, Tolerance
from model.dataset import make_labelled_data
from model.estimators import DEFAULT_ESTIMATOR, ESTIMATORS
from model.evaluation import DEFAULT_GATES, Trained, train_and_evaluate
from model.report import write_report
from model.served_data import DEFAULT_MAX_EVENTS
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
    if args.from_logged:
        return _train_from_logged(settings, args, started)
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
    trained = train_and_evaluate(data, args.seed, args.estimator, FeatureContract(), _gates(args))
    return _conclude(settings, args, trained, _metadata(trained, args), started)


def _train_from_logged(settings: Settings, args: argparse.Namespace, started: float) -> int:
    """Train on the served events, compare with the serving model on the most recent ones, register if not worse."""
    options = logged.LoggedOptions(
        since=_since(args), holdout_fraction=args.holdout_fraction, max_events=args.max_events,
        tolerance=Tolerance(roc_auc=args.auc_tolerance, log_loss=args.log_loss_tolerance),
    )
    contract = FeatureContract()
    try:
        data = asyncio.run(logged.gather_labelled(settings, options, contract, datetime.now(UTC)))
        split = logged.split_by_time(data.labels, options.holdout_fraction)
        serving = logged.load_serving(settings)
    except PredictionError as exc:  # a setting, a grant or a model to fix (2), too little data (4), MLflow away (1)
        log.error("%s", exc)
        return exc.exit_code
    except pymysql.err.MySQLError as exc:
        log.error("cannot label the served events in MySQL at %s:%s: %s (is it running? `make up` starts a local one)",
                  settings.mysql_host, settings.mysql_port, exc)
        return 1
    except KafkaError as exc:
        refusal = kafka_refusal(exc, settings)
        if refusal is not None:
            log.error("%s", refusal)
            return refusal.exit_code
        log.error("cannot read the served events from Kafka at %s: %s (is it running? `make up` starts a local one)",
                  settings.kafka_bootstrap_servers, exc)
        return 1
    log.info("labelled %d of %d served events (label windows closed by %s), %.1f%% purchases; training %s on the %d older"
             " ones", len(data), data.served_events, data.horizon.isoformat(timespec="seconds"), 100 * data.labels.mean(),
             args.estimator, split.at)
    overlap = None if serving is None else logged.trained_on_holdout(serving, split.holdout_from(data))
    if overlap:
        log.warning("%s", overlap)
    trained = logged.fit_on_split(data, split, args.seed, args.estimator, contract, _gates(args))
    comparison = logged.compare(data, split, trained, serving, options.tolerance)
    trained = logged.with_comparison(trained, comparison)
    print(logged.describe_holdout(data, split))
    print("\n".join(comparison.table()))
    metadata = {
        **_metadata(trained, args),
        "training": logged.training_record(data, split, options, settings, args.seed),
        "comparison": comparison.to_dict(),
    }
    return _conclude(settings, args, trained, metadata, started, comparison)


def _since(args: argparse.Namespace) -> datetime | None:
    if args.hours is not None:
        return datetime.now(UTC) - timedelta(hours=args.hours)
    return args.since


def _gates(args: argparse.Namespace) -> dict[str, float]:
    return {"max_auc_gap_to_oracle": args.max_auc_gap, "max_ece": args.max_ece}


def _conclude(settings: Settings, args: argparse.Namespace, trained: Trained, metadata: dict[str, Any], started: float,
              comparison: Comparison | None = None) -> int:
    """Save the model with its report; register it if it passed its gates (and is not worse than the serving
    model), else keep it under rejected/. Returns the exit code."""
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
        worse = comparison is not None and not comparison.not_worse
        if not trained.passed:
            kept = _keep_rejected(home, trained.model.version, files)
            failed = [f"{name} {value:.4f} > {limit:g}" for name, (value, limit, ok) in trained.evaluation.gates.items() if not ok]
            also = f"; also worse than the serving model ({'; '.join(comparison.shortfalls())})" if worse and comparison else ""
            log.error("model %s rejected (%s): %s%s; nothing registered, its report is in %s",
                      trained.model.version, ", ".join(failed), summary, also, kept)
            return 1
        if worse and comparison is not None:
            kept = _keep_rejected(home, trained.model.version, files)
            log.error("model %s is worse than the serving model %s on the %d most recent labelled events (%s): %s;"
                      " nothing registered, %s keeps serving; its report is in %s", trained.model.version,
                      comparison.serving_version, comparison.rows, "; ".join(comparison.shortfalls()), summary,
                      comparison.serving_version, kept)
            return logged.EXIT_WORSE
        if comparison is not None and comparison.serving is not None:
            summary += (f"; not worse than the serving model {comparison.serving_version} on the {comparison.rows} most recent"
                        f" labelled events (ROC AUC {comparison.serving.roc_auc:.4f}, log loss {comparison.serving.log_loss:.4f})")
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
    served = parser.add_argument_group("training on what was served")
    served.add_argument("--from-logged", action="store_true",
                        help="train on the served events (OUTPUT_TOPIC joined with INPUT_TOPIC, labelled from the offline store)")
    start = served.add_mutually_exclusive_group()
    start.add_argument("--since", type=_moment, metavar="ISO-8601",
                       help="read what was served from this moment (no offset: UTC); default: all the topics hold")
    start.add_argument("--hours", type=float, metavar="N", help="read what was served in the last N hours")
    served.add_argument("--holdout-fraction", type=float, metavar="F",
                        help=f"the most recent share of labelled events held out (default {logged.DEFAULT_HOLDOUT_FRACTION})")
    served.add_argument("--max-events", type=int, metavar="N",
                        help=f"most served events read, about 0.7 KB of memory each at the peak (default {DEFAULT_MAX_EVENTS})")
    served.add_argument("--auc-tolerance", type=float, metavar="T",
                        help=f"how far the ROC AUC may fall below the serving model's (default {AUC_TOLERANCE})")
    served.add_argument("--log-loss-tolerance", type=float, metavar="T",
                        help=f"how far the log loss may rise above the serving model's (default {LOG_LOSS_TOLERANCE})")
    args = parser.parse_args(argv)
    if args.samples < 1_000 or args.users < 1:
        parser.error("--samples must be at least 1000 and --users at least 1")
    logged_only = ["since", "hours", "holdout_fraction", "max_events", "auc_tolerance", "log_loss_tolerance"]
    given = [f"--{name.replace('_', '-')}" for name in logged_only if getattr(args, name) is not None]
    if given and not args.from_logged:
        parser.error(f"{', '.join(given)}: only with --from-logged (training on what was served)")
    for name, default in (("holdout_fraction", logged.DEFAULT_HOLDOUT_FRACTION), ("max_events", DEFAULT_MAX_EVENTS),
                          ("auc_tolerance", AUC_TOLERANCE), ("log_loss_tolerance", LOG_LOSS_TOLERANCE)):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if not 0 < args.holdout_fraction < 1:
        parser.error(f"--holdout-fraction must lie between 0 and 1, got {args.holdout_fraction:g}")
    if args.hours is not None and not args.hours > 0:
        parser.error(f"--hours must be more than 0, got {args.hours:g}")
    if args.max_events < 1:
        parser.error(f"--max-events must be at least 1, got {args.max_events}")
    if not (args.auc_tolerance >= 0 and args.log_loss_tolerance >= 0):
        parser.error("--auc-tolerance and --log-loss-tolerance must be 0 or more")
    return args


def _moment(text: str) -> datetime:
    """An ISO-8601 moment; without an offset it is UTC, as event timestamps are."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 moment, e.g. 2026-12-05T17:00:00Z") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


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
