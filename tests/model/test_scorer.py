"""The folded numpy scorer against the Pipeline it was folded from."""

import dataclasses
import random
import time

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline

from events.pages import KNOWN_PAGES
from features.contract import BUILDABLE_COLUMNS, FeatureContract
from features.inputs import feature_frame
from features.user import UserFeatures
from model import artifact
from model.artifact import ModelArtifactError
from model.estimators import build_pipeline
from model.scorer import fold_pipeline
from tests.factories import small_feature_table, trained_model

NOW = time.time()
DAY = 86_400.0


@pytest.fixture(scope="module")
def model():
    return trained_model(small_feature_table(200, now_s=NOW), num_users=200, built_at_s=NOW)


def random_batch(n: int, seed: int = 5):
    """Random events: unknown pages, cold-start users, and events dated before their user's last purchase among them."""
    rng = random.Random(seed)
    pages = [tuple(rng.choice([*KNOWN_PAGES, "never-seen"]) for _ in range(3)) for _ in range(n)]
    users = [
        UserFeatures(rng.uniform(0, 900), rng.randint(0, 80), NOW - rng.uniform(0, 800) * DAY) if rng.random() < 0.8 else None
        for _ in range(n)
    ]
    event_at = [NOW + rng.uniform(-30, 90) * DAY for _ in range(n)]
    return pages, users, event_at


def test_the_folded_scorer_equals_predict_proba_to_1e_9(model):
    """On fresh random rows, unknown pages and cold-start users included, the fast path matches the Pipeline."""
    fast = model.with_fast_path()
    assert fast.scorer is not None
    pages, users, event_at = random_batch(3_000)
    difference = np.max(np.abs(fast.predict(pages, users, event_at) - model.predict_with_pipeline(pages, users, event_at)))
    assert difference <= 1e-9


def test_a_single_event_scores_like_a_batch(model):
    """Scoring one row alone gives the same number as scoring it inside a batch."""
    fast = model.with_fast_path()
    pages, users, event_at = random_batch(50)
    together = fast.predict(pages, users, event_at)
    alone = [fast.predict([p], [u], [t])[0] for p, u, t in zip(pages, users, event_at, strict=True)]
    assert np.allclose(together, alone, rtol=0, atol=1e-15)


def test_a_pipeline_of_another_shape_falls_back_to_predict_proba(model):
    """A Pipeline the folding does not recognise keeps no scorer and still predicts through sklearn."""
    pages, users, event_at = random_batch(200)
    frame = feature_frame(model.contract, pages, users, event_at)
    features = model.pipeline.named_steps["columns"]
    forest = Pipeline([("columns", features), ("classifier", RandomForestClassifier(n_estimators=5, random_state=0))])
    forest.fit(frame, np.arange(200) % 2)
    other = dataclasses.replace(model, pipeline=forest)
    assert fold_pipeline(forest, model.contract) is None
    fallback = other.with_fast_path()
    assert fallback.scorer is None
    assert np.array_equal(fallback.predict(pages, users, event_at), forest.predict_proba(frame)[:, 1])


def test_a_contract_with_fewer_columns_is_not_folded():
    """Logistic regression over a contract without some column is served through its Pipeline, not folded."""
    contract = FeatureContract(features=tuple(name for name in BUILDABLE_COLUMNS if name != "is_new_user"))
    pages, users, event_at = random_batch(200)
    pipeline = build_pipeline(contract).fit(feature_frame(contract, pages, users, event_at), np.arange(200) % 2)
    assert fold_pipeline(pipeline, contract) is None


def test_a_scorer_that_disagrees_with_the_pipeline_is_refused(model, monkeypatch):
    """If the folded numbers drift from predict_proba by more than 1e-9 the model is not served."""
    honest = fold_pipeline(model.pipeline, model.contract)
    assert honest is not None
    drifted = dataclasses.replace(honest, intercept=honest.intercept + 1e-6)
    monkeypatch.setattr(artifact, "fold_pipeline", lambda pipeline, contract: drifted)
    with pytest.raises(ModelArtifactError, match="differs from predict_proba") as caught:
        model.with_fast_path()
    assert caught.value.reason == "parity"
