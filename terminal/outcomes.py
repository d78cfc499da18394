"""Honest purchases for the producer's events, drawn from the documented ground truth.

For every valid event the simulation draws whether its user buys within LABEL_WINDOW_S, with the
probability model/ground_truth.py gives for the user's features as of the event's own time: what
the offline store said when the producer started, plus the purchases this simulation has made
since (the store itself learns of those later, through the purchase sink). A purchase comes a
uniform delay in (0, LABEL_WINDOW_S] after its event, so the label rule (a purchase of the user in
(t, t + LABEL_WINDOW_S]) calls that event's prediction positive.

The same seed draws the same numbers: who buys, when and how much then differ between two runs
only through the events' own times (recency). Purchase ids are random, never seeded: a second
run with the same seed must not send ids the store already holds.
"""

from __future__ import annotations

import heapq
import math
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from events.purchase import MAX_AMOUNT, Purchase
from events.schema import Event
from features.contract import FeatureContract
from features.inputs import feature_frame
from features.user import UserFeatures
from model.ground_truth import true_purchase_probability
from terminal.outcomes_schedule import PurchaseSchedule

# The world's own cold start (the ground truth's), not a served model's: a model may assume others.
WORLD = FeatureContract()
# Spend as the loader's synthetic history draws it (offline_store/history.py): a user's level is
# lognormal(3.6, 0.7), each purchase that level times lognormal(0, 0.35). A new user's first
# purchase draws both at once.
PURCHASE_SPREAD = 0.35
NEW_USER_LOG_SPEND = 3.6
NEW_USER_SPREAD = math.hypot(0.7, PURCHASE_SPREAD)
MIN_AMOUNT = 0.5
# The mean of the last three purchases is what the store keeps (features/user.py).
LAST_PURCHASES_KEPT = 3
# Mixed into the seed, so the outcomes' numbers are not the events' own (the producer's events
# come from random.Random(seed)).
OUTCOME_STREAM = 0x0C0E
# Uniform draws per event, whether it buys or not: the stream then does not depend on how the
# producer groups events, so a seeded run repeats however its timing falls.
DRAWS_PER_EVENT = 4


@dataclass
class _OwnPurchases:
    """One user's history once this simulation has made them buy."""

    last_amounts: deque[float]
    count: int
    last_at_s: float
    # (moment, amount) of purchases no event of the user has reached yet, earliest first.
    upcoming: list[tuple[float, float]] = field(default_factory=list)


class SimulatedUsers:
    """Users' features at any moment: the store's at start, plus the purchases made since."""

    def __init__(self, store_users: Mapping[int, UserFeatures]) -> None:
        self._store = store_users
        self._own: dict[int, _OwnPurchases] = {}

    def features_at(self, user_id: int, at_s: float) -> UserFeatures | None:
        """The user's features as of `at_s` (seconds since the epoch); None for a user without history.

        Asked for each user at times that do not go back (the producer's events are stamped by the
        clock), so a purchase once reached is folded into the history for good.
        """
        own = self._own.get(user_id)
        if own is None:
            return self._store.get(user_id)
        while own.upcoming and own.upcoming[0][0] <= at_s:
            purchased_at_s, amount = heapq.heappop(own.upcoming)
            own.last_amounts.append(amount)
            own.count += 1
            own.last_at_s = max(own.last_at_s, purchased_at_s)
        if own.count == 0:
            return None
        return UserFeatures(sum(own.last_amounts) / len(own.last_amounts), own.count, own.last_at_s, False)

    def record_purchase(self, user_id: int, at_s: float, amount: float) -> None:
        """A purchase at `at_s`: features asked for at that moment or later include it."""
        own = self._own.get(user_id)
        if own is None:
            own = self._own[user_id] = _from_store(self._store.get(user_id))
        heapq.heappush(own.upcoming, (at_s, amount))


def _from_store(known: UserFeatures | None) -> _OwnPurchases:
    if known is None:
        return _OwnPurchases(deque(maxlen=LAST_PURCHASES_KEPT), 0, -math.inf)
    # The store keeps the mean of the last three, not the amounts: each of them counts as that
    # mean, which keeps their sum exact, so the mean after one more purchase is exact too (after
    # two or more it depends on which amount drops out, which the store does not tell).
    kept = min(int(known.purchase_count), LAST_PURCHASES_KEPT)
    amounts = deque([known.mean_last_3_purchases] * kept, maxlen=LAST_PURCHASES_KEPT)
    return _OwnPurchases(amounts, int(known.purchase_count), known.last_purchase_at)


class OutcomeSimulation:
    """Draws the purchases that follow events and holds them until their moment."""

    def __init__(self, store_users: Mapping[int, UserFeatures], window_s: float, seed: int | None) -> None:
        if not window_s > 0:
            raise ValueError(f"the label window must be positive, got {window_s!r} s")
        self.users = SimulatedUsers(store_users)
        self.window_s = window_s
        self.schedule = PurchaseSchedule()
        self._random = np.random.default_rng(None if seed is None else (seed, OUTCOME_STREAM))

    def probabilities(self, events: Sequence[Event]) -> tuple[npt.NDArray[np.float64], list[UserFeatures | None]]:
        """The ground-truth probability of a purchase within the window, for each event, and the
        features it was computed from (the user's as of the event's time; None: no history)."""
        at_s = [event.timestamp.timestamp() for event in events]
        users = [self.users.features_at(event.user_id, t) for event, t in zip(events, at_s, strict=True)]
        frame = feature_frame(WORLD, [event.pages for event in events], users, at_s)
        return np.asarray(true_purchase_probability(frame), dtype=np.float64), users

    def draw(self, events: Sequence[Event]) -> list[Purchase]:
        """The purchases that follow `events`, scheduled (and returned): at most one per event.

        Events drawn together see the history before any of their own purchases: one of them that
        lands before a later event of the same batch (events a few milliseconds apart, delays up to
        the whole window) is missed by that event's features, a negligible slip.
        """
        if not events:
            return []
        probability, users = self.probabilities(events)
        uniform = self._random.random((len(events), DRAWS_PER_EVENT))
        purchases = []
        for i in np.flatnonzero(uniform[:, 0] < probability).tolist():
            event = events[i]
            purchase = Purchase(
                uuid.uuid4().hex, event.user_id, _amount(users[i], uniform[i, 2], uniform[i, 3]),
                event.timestamp + _delay(self.window_s, float(uniform[i, 1])),
            )
            self.users.record_purchase(purchase.user_id, purchase.timestamp.timestamp(), purchase.amount)
            self.schedule.add(purchase)
            purchases.append(purchase)
        return purchases

    def due(self, now: datetime) -> list[Purchase]:
        """The scheduled purchases whose moment `now` has reached, earliest first."""
        return self.schedule.pop_due(now)


def _delay(window_s: float, uniform: float) -> timedelta:
    # In whole microseconds, as timestamps travel: at least one, so a purchase is never at its
    # event's own instant (the window is open there), and rounded up, which keeps within the window.
    microseconds = math.ceil(window_s * (1.0 - uniform) * 1e6)
    return timedelta(microseconds=max(1, min(microseconds, math.floor(window_s * 1e6))))


def _amount(user: UserFeatures | None, uniform_a: float, uniform_b: float) -> float:
    # A standard normal from two uniforms (Box-Muller), so every event uses the same draws.
    normal = math.sqrt(-2.0 * math.log(1.0 - uniform_a)) * math.cos(2.0 * math.pi * uniform_b)
    if user is not None and user.mean_last_3_purchases > 0:
        amount = user.mean_last_3_purchases * math.exp(PURCHASE_SPREAD * normal)
    else:
        amount = math.exp(NEW_USER_LOG_SPEND + NEW_USER_SPREAD * normal)
    return round(min(max(amount, MIN_AMOUNT), MAX_AMOUNT), 2)
