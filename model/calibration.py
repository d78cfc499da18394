"""How far a model's predicted probabilities are from the rates at which purchases really happen.

A model is calibrated when, among the events it gives probability p, a share p end in a purchase.
`reliability_curve` groups the predictions into equal-width bins over [0, 1] and sets each bin's
mean prediction against its observed purchase rate; `expected_calibration_error` (ECE) is the
gap between the two, averaged over the bins weighted by how many predictions each holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

ECE_BINS = 10


# eq=False: the fields are arrays, whose == is elementwise and has no single truth value.
@dataclass(frozen=True, eq=False)
class ReliabilityCurve:
    """One entry per non-empty bin, in bin order; bin k covers [k/bins, (k+1)/bins), the last one also 1.0."""

    bins: int
    bin_indices: np.ndarray  # which of the `bins` bins each entry is
    mean_predicted: np.ndarray
    observed_rate: np.ndarray
    counts: np.ndarray


def reliability_curve(labels: npt.ArrayLike, probabilities: npt.ArrayLike, bins: int = ECE_BINS) -> ReliabilityCurve:
    """Mean prediction, observed positive rate and count of each non-empty equal-width bin."""
    y, p = _checked(labels, probabilities, bins)
    # floor(p * bins) puts 1.0 in a bin of its own past the end; it belongs to the last one.
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    predicted_sums = np.bincount(index, weights=p, minlength=bins)
    positive_sums = np.bincount(index, weights=y, minlength=bins)
    filled = counts > 0
    return ReliabilityCurve(
        bins=bins,
        bin_indices=np.flatnonzero(filled),
        mean_predicted=predicted_sums[filled] / counts[filled],
        observed_rate=positive_sums[filled] / counts[filled],
        counts=counts[filled],
    )


def expected_calibration_error(labels: npt.ArrayLike, probabilities: npt.ArrayLike, bins: int = ECE_BINS) -> float:
    """Sum over the bins of (bin count / total) * |observed rate - mean predicted|."""
    curve = reliability_curve(labels, probabilities, bins)
    weights = curve.counts / curve.counts.sum()
    return float(np.sum(weights * np.abs(curve.observed_rate - curve.mean_predicted)))


def _checked(labels: npt.ArrayLike, probabilities: npt.ArrayLike, bins: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    if bins < 1:
        raise ValueError(f"calibration needs at least one bin, got bins={bins}")
    if y.ndim != 1 or p.ndim != 1 or y.shape != p.shape:
        raise ValueError(f"labels and probabilities must be 1-D and of the same length, got shapes {y.shape} and {p.shape}")
    if y.size == 0:
        raise ValueError("calibration needs at least one prediction, got none")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    if not np.all((p >= 0) & (p <= 1)):  # also false for NaN
        raise ValueError("probabilities must lie in [0, 1] (NaN is not allowed)")
    return y, p
