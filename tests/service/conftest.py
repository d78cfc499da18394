import pytest

from tests.factories import small_feature_table, trained_model


@pytest.fixture(scope="module")
def model():
    """A model trained on 200 users, shared by a module's tests."""
    return trained_model(small_feature_table(200), num_users=200)
