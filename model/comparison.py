"""Whether a newly trained model may replace the serving one: both scored on the same recent hold-out.

The rule, "not worse": the new model's ROC AUC is at least the serving model's minus
AUC_TOLERANCE, and its log loss at most the serving model's plus LOG_LOSS_TOLERANCE. Both must
hold: AUC says it ranks events as well, log loss that its probabilities are as good, calibration
included (a model can rank as well and still be off in its probabilities, which the quality
monitor and every reader of `purchase_probability` would see).

Why a tolerance, and why these: two equally good models differ on a hold-out by noise alone. The
same family fitted on two samples of 30,000 events of the same world differs on a 1,000-event
hold-out by up to about 0.003 in AUC and 0.002 in log loss. Demanding a strict improvement would
refuse such a tie about half the time, so a model would stop keeping up with fresh data for
nothing; 0.005 lets a tie through and still refuses a model that ranks or calibrates measurably
worse. A refusal costs little: the serving model keeps serving.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import log_loss, roc_auc_score

AUC_TOLERANCE = 0.005
LOG_LOSS_TOLERANCE = 0.005


@dataclass(frozen=True)
class Scores:
    roc_auc: float
    log_loss: float


def scores(labels: npt.ArrayLike, probabilities: npt.ArrayLike) -> Scores:
    """ROC AUC and log loss of `probabilities` against 0/1 `labels` (both classes present)."""
    y = np.asarray(labels)
    p = np.asarray(probabilities, dtype=np.float64)
    return Scores(roc_auc=float(roc_auc_score(y, p)), log_loss=float(log_loss(y, p, labels=[0, 1])))


@dataclass(frozen=True)
class Tolerance:
    roc_auc: float = AUC_TOLERANCE
    log_loss: float = LOG_LOSS_TOLERANCE

    def __post_init__(self) -> None:
        if not (self.roc_auc >= 0 and self.log_loss >= 0):  # also refuses NaN
            raise ValueError(f"tolerances must be 0 or more, got ROC AUC {self.roc_auc!r} and log loss {self.log_loss!r}")


@dataclass(frozen=True)
class Comparison:
    """The new model against the serving one on one hold-out. `serving` is None when no model serves:
    then there is nothing to be worse than."""

    rows: int
    new: Scores
    serving: Scores | None
    serving_version: str | None
    tolerance: Tolerance = field(default_factory=Tolerance)
    # What the service published for the same events (with the features it had then), for reference only.
    as_served: Scores | None = None

    @property
    def auc_ok(self) -> bool:
        return self.serving is None or self.new.roc_auc >= self.serving.roc_auc - self.tolerance.roc_auc

    @property
    def log_loss_ok(self) -> bool:
        return self.serving is None or self.new.log_loss <= self.serving.log_loss + self.tolerance.log_loss

    @property
    def not_worse(self) -> bool:
        return self.auc_ok and self.log_loss_ok

    def shortfalls(self) -> list[str]:
        """Why the new model is worse, one entry per failed half of the rule; empty when it is not."""
        if self.serving is None:
            return []
        said = []
        if not self.auc_ok:
            said.append(f"ROC AUC {self.new.roc_auc:.4f} < {self.serving.roc_auc:.4f} - {self.tolerance.roc_auc:g}")
        if not self.log_loss_ok:
            said.append(f"log loss {self.new.log_loss:.4f} > {self.serving.log_loss:.4f} + {self.tolerance.log_loss:g}")
        return said

    def table(self) -> list[str]:
        """The scores side by side, for a person."""
        rows = [("new model", self.new)]
        if self.serving is not None:
            rows.append((f"serving {self.serving_version or ''}".strip(), self.serving))
        if self.as_served is not None:
            rows.append(("as served (logged)", self.as_served))
        width = max(len(name) for name, _ in rows)
        lines = [f"{'':<{width}}  ROC AUC  log loss", *(f"{name:<{width}}  {s.roc_auc:7.4f}  {s.log_loss:8.4f}" for name, s in rows)]
        if self.serving is None:
            lines.append("no model serves: nothing to compare with")
        else:
            verdict = "not worse" if self.not_worse else "WORSE: " + "; ".join(self.shortfalls())
            lines.append(f"rule: ROC AUC >= serving - {self.tolerance.roc_auc:g} and log loss <= serving + {self.tolerance.log_loss:g}:"
                         f" {verdict}")
        return lines

    def metrics(self) -> dict[str, float]:
        """The scores of the other models, beside the new model's own metrics in model.json and the report."""
        found: dict[str, float] = {"comparison_rows": float(self.rows)}
        for prefix, score in (("serving", self.serving), ("as_served", self.as_served)):
            if score is not None:
                found[f"{prefix}_roc_auc"] = score.roc_auc
                found[f"{prefix}_log_loss"] = score.log_loss
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "serving_version": self.serving_version,
            "new": asdict(self.new),
            "serving": None if self.serving is None else asdict(self.serving),
            "as_served": None if self.as_served is None else asdict(self.as_served),
            "tolerance": asdict(self.tolerance),
            "not_worse": self.not_worse,
        }
