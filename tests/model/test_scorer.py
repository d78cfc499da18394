import dataclasses
import random

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline

from events.pages import KNOWN_PAGES
from model import artifact
from model.artifact import ModelArtifactError
from model.features import feature_frame
from model.scorer import fold_pipeline
from offline_store.features import COLD_START, UserFeatures
from tests.factories import small_feature_table, trained_model


@pytest.fixture(scope="module")
def model():
    return trained_model(small_feature_table(200), num_users=200)


def random_batch(n: int, seed: int = 5):
    rng = random.Random(seed)
    pages = [tuple(rng.choice([*KNOWN_PAGES, "never-seen"]) for _ in range(3)) for _ in range(n)]
    users = [
        UserFeatures(rng.uniform(0, 900), rng.randint(0, 80), rng.uniform(0, 800), False) if rng.random() < 0.8 else COLD_START
        for _ in range(n)
    ]
    return pages, users


def test_the_folded_scorer_equals_predict_proba_to_1e_9(model):
    """On fresh random rows, unknown pages and cold-start users included, the fast path matches the Pipeline."""
    fast = model.with_fast_path()
    assert fast.scorer is not None
    pages, users = random_batch(3_000)
    difference = np.max(np.abs(fast.predict(pages, users) - model.predict_with_pipeline(pages, users)))
    assert difference <= 1e-9


def test_a_single_event_scores_like_a_batch(model):
    """Scoring one row alone gives the same number as scoring it inside a batch."""
    fast = model.with_fast_path()
    pages, users = random_batch(50)
    together = fast.predict(pages, users)
    alone = [fast.predict([p], [u])[0] for p, u in zip(pages, users, strict=True)]
    assert np.allclose(together, alone, rtol=0, atol=1e-15)


def test_a_pipeline_of_another_shape_falls_back_to_predict_proba(model):
    """A Pipeline the folding does not recognise keeps no scorer and still predicts through sklearn."""
    pages, users = random_batch(200)
    features = model.pipeline.named_steps["columns"]
    forest = Pipeline([("columns", features), ("classifier", RandomForestClassifier(n_estimators=5, random_state=0))])
    forest.fit(feature_frame(pages, users), np.arange(200) % 2)
    other = dataclasses.replace(model, pipeline=forest)
    assert fold_pipeline(forest) is None
    fallback = other.with_fast_path()
    assert fallback.scorer is None
    assert np.array_equal(fallback.predict(pages, users), forest.predict_proba(feature_frame(pages, users))[:, 1])


def test_a_scorer_that_disagrees_with_the_pipeline_is_refused(model, monkeypatch):
    """If the folded numbers drift from predict_proba by more than 1e-9 the model is not served."""
    honest = fold_pipeline(model.pipeline)
    assert honest is not None
    monkeypatch.setattr(artifact, "fold_pipeline", lambda pipeline: dataclasses.replace(honest, intercept=honest.intercept + 1e-6))
    with pytest.raises(ModelArtifactError, match="refusing to serve"):
        model.with_fast_path()

