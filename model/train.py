"""Train the purchase model on labelled synthetic events joined with the offline store.

    python -m model.train [--samples 60000] [--users 10000] [--seed 7]

Writes MODEL_PATH (default model/artifacts/model.joblib) and model.json beside it, but only if
the model's held-out ROC AUC is within 0.02 of the oracle's (the AUC of the true probabilities).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import pickle
import time
from datetime import UTC, datetime
from typing import Any

import pymysql
import sklearn
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split

from config import Settings
from errors import SetupError
from model.artifact import PurchaseModel, save_model
from model.dataset import LabelledData, make_labelled_data
from model.features import FEATURE_COLUMNS, build_pipeline
from offline_store.features import UserFeatures
from offline_store.mysql import MySQLFeatureStore, close_pool, create_pool
from runtime.startup import start_program

# Named explicitly: run with `python -m`, this module's __name__ is "__main__".
log = logging.getLogger("model.train")

MAX_AUC_GAP_TO_ORACLE = 0.02
HELD_OUT_SHARE = 0.25


class ModelRejected(SetupError):
    """The trained model is too far from the oracle to be worth serving."""


def train_and_evaluate(data: LabelledData, seed: int) -> tuple[PurchaseModel, dict[str, Any]]:
    """Fit on one split and score on the other; raise `ModelRejected` if it misses the oracle."""
    train_x, test_x, train_y, test_y, _, test_truth = train_test_split(
        data.features, data.labels, data.true_probability,
        test_size=HELD_OUT_SHARE, random_state=seed, stratify=data.labels,
    )
    pipeline = build_pipeline().fit(train_x, train_y)
    predicted = pipeline.predict_proba(test_x)[:, 1]
    metrics = {
        "roc_auc": float(roc_auc_score(test_y, predicted)),
        "log_loss": float(log_loss(test_y, predicted)),
        "brier_score": float(brier_score_loss(test_y, predicted)),
        "oracle_roc_auc": float(roc_auc_score(test_y, test_truth)),
        "oracle_log_loss": float(log_loss(test_y, test_truth)),
        "train_rows": len(train_y),
        "test_rows": len(test_y),
        "positive_rate": float(data.labels.mean()),
    }
    gap = metrics["oracle_roc_auc"] - metrics["roc_auc"]
    if gap > MAX_AUC_GAP_TO_ORACLE:
        raise ModelRejected(
            f"held-out ROC AUC {metrics['roc_auc']:.4f} is {gap:.4f} below the oracle's"
            f" {metrics['oracle_roc_auc']:.4f} (allowed: {MAX_AUC_GAP_TO_ORACLE})"
        )
    trained_at = datetime.now(UTC)
    digest = hashlib.sha256(pickle.dumps(pipeline)).hexdigest()[:10]
    model = PurchaseModel(
        pipeline=pipeline,
        version=f"{trained_at:%Y%m%dT%H%M%SZ}-{digest}",
        sklearn_version=sklearn.__version__,
        features=FEATURE_COLUMNS,
    )
    return model, metrics


async def fetch_user_features(settings: Settings) -> dict[int, UserFeatures]:
    pool = await create_pool(settings)
    try:
        return await MySQLFeatureStore(pool, settings.mysql_query_timeout_ms).get_all_features()
    finally:
        await close_pool(pool)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=60_000, help="labelled events to generate (default 60000)")
    parser.add_argument("--users", type=int, default=10_000, help="user ids 0..N-1 to draw events for (default 10000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    args = parser.parse_args(argv)
    if args.samples < 1_000 or args.users < 1:
        parser.error("--samples must be at least 1000 and --users at least 1")
    settings = start_program()

    started = time.perf_counter()
    try:
        known_users = asyncio.run(fetch_user_features(settings))
    except pymysql.err.MySQLError as exc:
        log.error("cannot read user features from MySQL at %s:%s: %s (run `make up` and"
                  " `python -m offline_store.loader` first)", settings.mysql_host, settings.mysql_port, exc)
        return 1
    log.info("read features of %d users from the offline store", len(known_users))
    data = make_labelled_data(known_users, args.users, args.samples, args.seed)
    log.info("generated %d labelled events (%.1f%% purchases); training", len(data.labels), 100 * data.labels.mean())
    try:
        model, metrics = train_and_evaluate(data, args.seed)
    except ModelRejected as exc:
        log.error("model rejected, nothing written: %s", exc)
        return 1

    metadata = {
        "version": model.version,
        "sklearn_version": model.sklearn_version,
        "features": list(model.features),
        "metrics": metrics,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "training": {"samples": args.samples, "users": args.users, "seed": args.seed},
    }
    save_model(model, settings.model_path, metadata)
    log.info(
        "model %s accepted: ROC AUC %.4f (oracle %.4f), log loss %.4f, Brier %.4f; wrote %s in %.1f s",
        model.version, metrics["roc_auc"], metrics["oracle_roc_auc"], metrics["log_loss"],
        metrics["brier_score"], settings.model_path, time.perf_counter() - started,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
