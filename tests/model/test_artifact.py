import json

import numpy as np
import pytest
import sklearn

from model.artifact import ModelArtifactError, load_model, metadata_path, save_model
from offline_store.features import COLD_START, UserFeatures
from tests.factories import small_feature_table, trained_model


@pytest.fixture(scope="module")
def model():
    return trained_model(small_feature_table(200), num_users=200)


@pytest.fixture
def saved(model, tmp_path):
    path = tmp_path / "model.joblib"
    save_model(model, path, {"version": model.version, "sklearn_version": model.sklearn_version})
    return path


def test_a_saved_model_loads_and_predicts_the_same(model, saved):
    """Round trip through joblib keeps the version and every probability."""
    pages = [("home", "product", "cart"), ("search", "product", "checkout")]
    users = [UserFeatures(40.0, 3, 10.0, False), COLD_START]
    loaded = load_model(saved)
    assert loaded.version == model.version
    np.testing.assert_array_equal(loaded.predict_with_pipeline(pages, users), model.predict_with_pipeline(pages, users))
    assert loaded.scorer is not None, "the served path is the folded scorer"
    np.testing.assert_allclose(loaded.predict(pages, users), model.predict(pages, users), rtol=0, atol=1e-12)


def test_a_missing_artifact_says_how_to_make_one(tmp_path):
    """No file: the error names the path and `make train`."""
    with pytest.raises(ModelArtifactError, match="make train"):
        load_model(tmp_path / "absent.joblib")


def test_an_artifact_from_another_sklearn_is_refused(saved):
    """A model.json naming another scikit-learn stops loading before unpickling."""
    metadata_path(saved).write_text(json.dumps({"sklearn_version": "0.24.2"}))
    with pytest.raises(ModelArtifactError, match=rf"scikit-learn 0\.24\.2 but {sklearn.__version__}"):
        load_model(saved)


def test_the_version_inside_the_artifact_is_checked_too(model, tmp_path):
    """Even without model.json, the version stored in the pickle is compared with the installed one."""
    path = tmp_path / "model.joblib"
    stale = type(model)(model.pipeline, model.version, "1.0.0", model.features)
    save_model(stale, path, {})
    metadata_path(path).unlink()
    with pytest.raises(ModelArtifactError, match=r"1\.0\.0"):
        load_model(path)


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    """Garbage at MODEL_PATH is a clear error, not a traceback from pickle."""
    path = tmp_path / "model.joblib"
    path.write_bytes(b"not a pickle")
    with pytest.raises(ModelArtifactError, match="cannot read"):
        load_model(path)
