"""Saving and loading a model: the round trip, the feature contract it carries, and every refusal."""

import dataclasses
import json
import time

import joblib
import numpy as np
import pytest
import sklearn

from features.contract import BUILDABLE_COLUMNS, DEFAULT_COLD_START, ContractError, FeatureContract
from features.user import UserFeatures
from model import artifact
from model.artifact import ModelArtifactError, file_sha256, load_model, metadata_path, save_model
from tests.factories import model_metadata, save_trained, small_feature_table, train

NOW = time.time()
DAY = 86_400.0
PAGES = [("home", "product", "cart"), ("search", "product", "checkout"), ("help", "account", "home")]
USERS = [UserFeatures(40.0, 3, NOW - 10 * DAY), None, UserFeatures(250.0, 20, NOW - 200 * DAY)]
EVENT_AT = [NOW + 3 * DAY, NOW, NOW + 45 * DAY]


@pytest.fixture(scope="module")
def trained():
    return train(small_feature_table(200, now_s=NOW), num_users=200, built_at_s=NOW)


@pytest.fixture
def model(trained):
    return trained.model


@pytest.fixture
def saved(trained, tmp_path):
    path = tmp_path / "model.joblib"
    save_trained(trained, path)
    return path


def rewrite_metadata(path, **changes):
    metadata = json.loads(metadata_path(path).read_text())
    metadata_path(path).write_text(json.dumps({**metadata, **changes}))


def refusal(path, **kwargs) -> ModelArtifactError:
    with pytest.raises(ModelArtifactError) as caught:
        load_model(path, **kwargs)
    return caught.value


def test_a_saved_model_loads_and_predicts_the_same(model, saved):
    """Round trip through joblib keeps the version, the contract and every probability."""
    loaded = load_model(saved)
    assert (loaded.version, loaded.estimator, loaded.contract) == (model.version, model.estimator, model.contract)
    np.testing.assert_array_equal(
        loaded.predict_with_pipeline(PAGES, USERS, EVENT_AT), model.predict_with_pipeline(PAGES, USERS, EVENT_AT)
    )
    assert loaded.scorer is not None, "the served path is the folded scorer"
    np.testing.assert_allclose(loaded.predict(PAGES, USERS, EVENT_AT), model.predict(PAGES, USERS, EVENT_AT), rtol=0, atol=1e-12)


def test_save_records_the_artifacts_checksum_in_its_json(model, tmp_path):
    """save_model returns the file's SHA-256 and writes the same into model.json."""
    path = tmp_path / "model.joblib"
    sha256 = save_model(model, path, {"version": model.version})
    assert sha256 == file_sha256(path)
    assert json.loads(metadata_path(path).read_text())["artifact_sha256"] == sha256


def test_predict_equals_predict_with_pipeline_to_1e_9(saved):
    """The folded scorer that serves and the saved Pipeline agree on the same events."""
    loaded = load_model(saved)
    assert loaded.scorer is not None
    difference = np.abs(loaded.predict(PAGES, USERS, EVENT_AT) - loaded.predict_with_pipeline(PAGES, USERS, EVENT_AT))
    assert difference.max() <= 1e-9


def test_an_unknown_page_reads_as_other(saved):
    """A page outside the contract's vocabulary scores exactly as its other_page, on both paths."""
    loaded = load_model(saved)
    unknown = [("home", "never-seen", "cart"), ("brand-new", "product", "also-new")]
    as_other = [("home", "other", "cart"), ("other", "product", "other")]
    users, times = USERS[:2], EVENT_AT[:2]
    np.testing.assert_array_equal(loaded.predict(unknown, users, times), loaded.predict(as_other, users, times))
    np.testing.assert_array_equal(loaded.predict_with_pipeline(unknown, users, times), loaded.predict_with_pipeline(as_other, users, times))


def test_hist_gradient_boosting_trains_and_is_served_through_its_pipeline(tmp_path):
    """A family that does not fold into numpy passes its gates on small data and serves through predict_proba."""
    trained = train(small_feature_table(200, now_s=NOW), num_users=200, samples=10_000, estimator="hist_gradient_boosting",
                    built_at_s=NOW)
    assert trained.passed, trained.evaluation.gates
    path = tmp_path / "model.joblib"
    save_trained(trained, path)
    loaded = load_model(path)
    assert loaded.estimator == "hist_gradient_boosting"
    assert loaded.scorer is None
    np.testing.assert_array_equal(loaded.predict(PAGES, USERS, EVENT_AT), loaded.predict_with_pipeline(PAGES, USERS, EVENT_AT))
    assert np.all((loaded.predict(PAGES, USERS, EVENT_AT) > 0) & (loaded.predict(PAGES, USERS, EVENT_AT) < 1))


# The feature contract.

def test_a_contract_survives_its_round_trip_through_a_dict():
    """What an artifact stores reads back as the same contract, with the same checksum."""
    contract = FeatureContract(cold_start={**DEFAULT_COLD_START, "days_since_last_purchase": 200.0}, recency_scale_days=14.0)
    again = FeatureContract.from_dict(json.loads(json.dumps(contract.to_dict())))
    assert again == contract
    assert again.checksum() == contract.checksum() != FeatureContract().checksum()


def test_a_contract_altered_after_training_is_refused_naming_its_checksum():
    """Changing one value without the checksum that covers it is caught."""
    tampered = FeatureContract().to_dict()
    tampered["cold_start"]["days_since_last_purchase"] = 30.0
    with pytest.raises(ContractError, match="checksum") as caught:
        FeatureContract.from_dict(tampered)
    assert caught.value.part == "checksum"


@pytest.mark.parametrize(
    ("changes", "part"),
    [
        ({"features": (*BUILDABLE_COLUMNS, "favourite_colour")}, "features"),
        ({"cold_start": {k: v for k, v in DEFAULT_COLD_START.items() if k != "purchase_count"}}, "cold_start"),
        ({"pages": ("home", "product", "cart", "checkout")}, "pages"),
    ],
    ids=["unknown feature", "missing cold-start value", "no other_page in the vocabulary"],
)
def test_a_contract_this_code_cannot_honour_is_refused_naming_the_part(changes, part):
    """Each impossible contract raises ContractError whose part and message name what is wrong."""
    with pytest.raises(ContractError) as caught:
        FeatureContract(**changes)
    assert caught.value.part == part
    assert str(caught.value).startswith(f"feature contract, {part}:")


def test_an_artifact_whose_contract_was_altered_is_refused(model, tmp_path):
    """A payload whose contract no longer matches its own checksum does not load, even with a matching file checksum."""
    path = tmp_path / "model.joblib"
    contract = model.contract.to_dict()
    contract["pages"] = [*contract["pages"][1:], contract["pages"][0]]
    payload = {"pipeline": model.pipeline, "version": model.version, "estimator": model.estimator,
               "sklearn_version": model.sklearn_version, "contract": contract}
    joblib.dump(payload, path)
    metadata_path(path).write_text(json.dumps({"sklearn_version": sklearn.__version__, "artifact_sha256": file_sha256(path)}))
    error = refusal(path)
    assert error.reason == "contract"
    assert "checksum" in str(error)


# Refusals while loading.

def test_a_missing_artifact_says_how_to_make_one(tmp_path):
    """No file: the error names the path and `make train`."""
    error = refusal(tmp_path / "absent.joblib")
    assert error.reason == "missing"
    assert "make train" in str(error) and "absent.joblib" in str(error)


def test_a_checksum_mismatch_is_refused_before_unpickling(tmp_path, monkeypatch):
    """Bytes that are not what model.json recorded are never handed to pickle."""
    path = tmp_path / "model.joblib"
    path.write_bytes(b"\x80\x04 not the bytes that were saved")
    metadata_path(path).write_text(json.dumps({"sklearn_version": sklearn.__version__, "artifact_sha256": "0" * 64}))

    def must_not_unpickle(*args, **kwargs):
        raise AssertionError("unpickled an artifact whose checksum does not match")

    monkeypatch.setattr(artifact.joblib, "load", must_not_unpickle)
    error = refusal(path)
    assert error.reason == "checksum"
    assert "refusing to unpickle" in str(error)


def test_an_artifact_without_a_recorded_checksum_is_refused(saved):
    """A model.json with no artifact_sha256 (an older or hand-made artifact) is not trusted."""
    metadata = json.loads(metadata_path(saved).read_text())
    del metadata["artifact_sha256"]
    metadata_path(saved).write_text(json.dumps(metadata))
    assert refusal(saved).reason == "checksum"


def test_the_expected_checksum_given_by_a_registry_wins_over_model_json(saved):
    """A registry's recorded SHA-256 is checked instead of the one beside the file."""
    assert refusal(saved, expected_sha256="f" * 64).reason == "checksum"
    assert load_model(saved, expected_sha256=file_sha256(saved)).version


def test_an_artifact_from_another_sklearn_is_refused(saved):
    """A model.json naming another scikit-learn stops loading before unpickling."""
    rewrite_metadata(saved, sklearn_version="0.24.2")
    error = refusal(saved)
    assert error.reason == "sklearn_version"
    assert f"scikit-learn 0.24.2 but {sklearn.__version__}" in str(error)


def test_the_version_inside_the_artifact_is_checked_too(trained, tmp_path):
    """Even with model.json naming the installed scikit-learn, the version stored in the pickle is compared too."""
    path = tmp_path / "model.joblib"
    stale = dataclasses.replace(trained.model, sklearn_version="1.0.0")
    save_model(stale, path, {**model_metadata(trained), "sklearn_version": sklearn.__version__})
    error = refusal(path)
    assert error.reason == "sklearn_version"
    assert "1.0.0" in str(error)


def test_a_model_failing_its_gates_is_refused(saved):
    """model.json's metrics against its gates: a model over a limit does not serve."""
    rewrite_metadata(saved, gates={"max_auc_gap_to_oracle": 0.02, "max_ece": 0.0})
    error = refusal(saved)
    assert error.reason == "gate"
    assert "max_ece" in str(error)


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    """Garbage with a matching checksum is a clear error, not a traceback from pickle."""
    path = tmp_path / "model.joblib"
    path.write_bytes(b"not a pickle")
    metadata_path(path).write_text(json.dumps({"sklearn_version": sklearn.__version__, "artifact_sha256": file_sha256(path)}))
    error = refusal(path)
    assert error.reason == "unreadable"
    assert "cannot read" in str(error)
