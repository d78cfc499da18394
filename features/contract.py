"""The feature contract: what a model was trained on, carried inside its artifact.

Serving builds a model's inputs from its contract (feature names and order, page vocabulary,
cold-start values, recency scale) rather than from constants in code, so editing the code cannot
silently feed a trained model other inputs. A contract this code cannot honour is refused when
the model loads, naming the part.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from errors import SetupError
from events.pages import KNOWN_PAGES, OTHER_PAGE

CONTRACT_VERSION = 1

PAGE_COLUMNS = ("page_1", "page_2", "page_3")  # oldest first; page_3 is where the user is now
SPEND_COLUMNS = ("mean_last_3_purchases", "purchase_count")
RECENCY_COLUMNS = ("days_since_last_purchase",)
FLAG_COLUMNS = ("is_new_user",)
# Every column this code can build (features/inputs.py), in the order training uses.
BUILDABLE_COLUMNS = PAGE_COLUMNS + SPEND_COLUMNS + RECENCY_COLUMNS + FLAG_COLUMNS
NUMERIC_COLUMNS = SPEND_COLUMNS + RECENCY_COLUMNS + FLAG_COLUMNS

# What a user with no purchase history gets: nothing spent, nothing bought, and a purchase a year
# before the event, which is also where the loader's history stops. `is_new_user` lets the model
# tell "never bought" apart from "bought little, long ago".
DEFAULT_COLD_START = {"mean_last_3_purchases": 0.0, "purchase_count": 0.0, "days_since_last_purchase": 365.0, "is_new_user": 1.0}
# Days over which the pull of a recent purchase fades (e-folding time).
DEFAULT_RECENCY_SCALE_DAYS = 30.0


class ContractError(SetupError):
    """An artifact's feature contract that this code cannot honour; `part` names what is wrong."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(f"feature contract, {part}: {message}")
        self.part = part


@dataclass(frozen=True)
class FeatureContract:
    features: tuple[str, ...] = BUILDABLE_COLUMNS
    pages: tuple[str, ...] = KNOWN_PAGES
    other_page: str = OTHER_PAGE  # what a page outside `pages` is read as
    cold_start: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_COLD_START))
    recency_scale_days: float = DEFAULT_RECENCY_SCALE_DAYS
    version: int = CONTRACT_VERSION

    def __post_init__(self) -> None:
        _check(self)

    def body(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "features": list(self.features),
            "pages": list(self.pages),
            "other_page": self.other_page,
            "cold_start": {name: float(self.cold_start[name]) for name in sorted(self.cold_start)},
            "recency_scale_days": float(self.recency_scale_days),
        }

    def checksum(self) -> str:
        canonical = json.dumps(self.body(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "checksum": self.checksum()}

    @classmethod
    def from_dict(cls, data: Any) -> FeatureContract:
        """The contract an artifact carries; ContractError naming the part this code cannot honour."""
        if not isinstance(data, Mapping):
            raise ContractError("format", "missing or not a mapping: the artifact predates contracts; retrain it")
        if data.get("version") != CONTRACT_VERSION:
            raise ContractError("version", f"{data.get('version')!r}, this code reads version {CONTRACT_VERSION}")
        try:
            contract = cls(
                features=tuple(data["features"]),
                pages=tuple(data["pages"]),
                other_page=str(data["other_page"]),
                cold_start={str(k): float(v) for k, v in dict(data["cold_start"]).items()},
                recency_scale_days=float(data["recency_scale_days"]),
            )
        except KeyError as exc:
            raise ContractError(str(exc.args[0]), "missing") from None
        except (TypeError, ValueError) as exc:
            raise ContractError("format", str(exc)) from None
        if data.get("checksum") != contract.checksum():
            raise ContractError("checksum", "does not match the contract's contents: the artifact was altered after training")
        return contract


def _check(contract: FeatureContract) -> None:
    unknown = [name for name in contract.features if name not in BUILDABLE_COLUMNS]
    if unknown:
        raise ContractError("features", f"{unknown} cannot be built by this code (it builds {list(BUILDABLE_COLUMNS)})")
    if len(set(contract.features)) != len(contract.features):
        raise ContractError("features", f"{list(contract.features)} names a feature twice")
    if not contract.pages or len(set(contract.pages)) != len(contract.pages) or contract.other_page not in contract.pages:
        raise ContractError("pages", f"the vocabulary must be unique and hold other_page {contract.other_page!r}")
    needed = [name for name in NUMERIC_COLUMNS if name in contract.features]
    missing = [name for name in needed if name not in contract.cold_start]
    if missing or not all(math.isfinite(contract.cold_start[name]) for name in needed):
        raise ContractError("cold_start", f"needs a finite value for each of {needed}")
    if not (math.isfinite(contract.recency_scale_days) and contract.recency_scale_days > 0):
        raise ContractError("recency_scale_days", f"{contract.recency_scale_days!r} is not a positive number of days")
