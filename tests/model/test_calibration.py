import numpy as np
import pytest

from model.calibration import ECE_BINS, expected_calibration_error, reliability_curve


def calibrated_sample(n: int = 200_000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probabilities = rng.random(n)
    labels = (rng.random(n) < probabilities).astype(int)
    return labels, probabilities


def test_labels_drawn_from_the_probabilities_give_a_small_ece():
    labels, probabilities = calibrated_sample()
    assert expected_calibration_error(labels, probabilities) < 0.01


def test_probabilities_squashed_towards_one_half_give_a_large_ece():
    """Shrinking every prediction to a fifth of its distance from 0.5 misses by 0.8 * E|p - 0.5| = 0.2 on average."""
    labels, probabilities = calibrated_sample()
    squashed = 0.5 + 0.2 * (probabilities - 0.5)
    assert expected_calibration_error(labels, squashed) == pytest.approx(0.2, abs=0.01)


def test_a_hand_computed_two_bin_example():
    labels = [0, 1, 1, 0, 1]
    probabilities = [0.1, 0.4, 0.6, 0.8, 0.9]
    curve = reliability_curve(labels, probabilities, bins=2)
    np.testing.assert_array_equal(curve.bin_indices, [0, 1])
    np.testing.assert_array_equal(curve.counts, [2, 3])
    np.testing.assert_allclose(curve.mean_predicted, [0.25, 2.3 / 3], rtol=0, atol=1e-15)
    np.testing.assert_allclose(curve.observed_rate, [0.5, 2 / 3], rtol=0, atol=1e-15)
    # 2/5 * |0.5 - 0.25| + 3/5 * |2/3 - 2.3/3| = 0.1 + 0.06
    assert expected_calibration_error(labels, probabilities, bins=2) == pytest.approx(0.16, abs=1e-12)


def test_probability_one_falls_in_the_last_bin_and_zero_in_the_first():
    curve = reliability_curve([1, 1, 0], [1.0, 0.95, 0.0])
    np.testing.assert_array_equal(curve.bin_indices, [0, ECE_BINS - 1])
    np.testing.assert_array_equal(curve.counts, [1, 2])
    assert curve.bins == ECE_BINS


def test_a_bin_holds_its_lower_edge_and_not_its_upper_one():
    curve = reliability_curve([0, 1], [0.5, 0.49], bins=2)
    np.testing.assert_array_equal(curve.bin_indices, [0, 1])
    np.testing.assert_array_equal(curve.mean_predicted, [0.49, 0.5])


def test_empty_bins_are_left_out():
    curve = reliability_curve([0, 1, 1], [0.05, 0.93, 0.97])
    np.testing.assert_array_equal(curve.bin_indices, [0, 9])
    assert len(curve.mean_predicted) == len(curve.observed_rate) == len(curve.counts) == 2
    np.testing.assert_array_equal(curve.observed_rate, [0.0, 1.0])


def test_a_perfect_prediction_per_bin_has_zero_error():
    assert expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.0


@pytest.mark.parametrize(
    ("labels", "probabilities", "bins", "message"),
    [
        ([0, 1], [0.5], ECE_BINS, "same length"),
        ([], [], ECE_BINS, "at least one prediction"),
        ([0, 2], [0.5, 0.5], ECE_BINS, "0 or 1"),
        ([0, 1], [0.5, 1.5], ECE_BINS, r"\[0, 1\]"),
        ([0, 1], [0.5, float("nan")], ECE_BINS, "NaN"),
        ([0, 1], [0.5, 0.5], 0, "at least one bin"),
    ],
)
def test_inputs_it_cannot_bin_are_refused_with_the_reason(labels, probabilities, bins, message):
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(labels, probabilities, bins=bins)
