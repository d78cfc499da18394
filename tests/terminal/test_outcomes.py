"""The purchase simulation: drawn at the ground truth's rate, within the label window, from features as of each event."""

from __future__ import annotations

import math
import random
import statistics
from datetime import UTC, datetime, timedelta

import numpy as np

from events.schema import Event
from events.synthetic import random_pages
from features.user import UserFeatures
from terminal.outcomes import OutcomeSimulation, SimulatedUsers

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY_S = 86_400.0
WINDOW_S = 1_800


def event(user_id: int, at: datetime = T0, pages: tuple[str, str, str] = ("home", "product", "cart"), n: int = 0) -> Event:
    return Event(f"e-{user_id}-{n}", user_id, at, pages)


def store(num_users: int, seed: int = 1) -> dict[int, UserFeatures]:
    """Users 0..num_users-1, every third one without history; last purchases up to 200 days before T0."""
    rng = random.Random(seed)
    return {
        user_id: UserFeatures(rng.lognormvariate(3.6, 0.7), rng.randint(1, 30), T0.timestamp() - rng.uniform(0, 200) * DAY_S)
        for user_id in range(num_users) if user_id % 3
    }


def documented_probability(pages: tuple[str, str, str], user: UserFeatures | None, at: datetime) -> float:
    """The formula model/ground_truth.py documents, written out here by hand."""
    logit = -2.6 + {"checkout": 2.4, "cart": 1.3, "product": 0.4, "help": -0.5}.get(pages[2], 0.0)
    logit += 0.7 if "cart" in pages[:2] else 0.0
    if user is None:
        logit += 1.1 * math.exp(-365 / 30) - 0.6
    else:
        days = max(at.timestamp() - user.last_purchase_at, 0.0) / DAY_S
        logit += 0.45 * (math.log1p(user.mean_last_3_purchases) - 3.5) + 0.3 * math.log1p(user.purchase_count)
        logit += 1.1 * math.exp(-days / 30)
    return 1 / (1 + math.exp(-logit))


def test_the_probability_is_the_documented_ground_truth_of_the_features_at_the_event():
    """Known users' features (recency at the event's own time) and cold users' defaults give the documented probability."""
    known = {7: UserFeatures(55.0, 4, T0.timestamp() - 12 * DAY_S)}
    simulation = OutcomeSimulation(known, WINDOW_S, seed=1)
    cases = [event(7, pages=("cart", "home", "checkout")), event(7, T0 + timedelta(days=30), ("home", "search", "help")),
             event(8, pages=("home", "home", "product"))]
    probability, users = simulation.probabilities(cases)
    assert users == [known[7], known[7], None]
    expected = [documented_probability(e.pages, known.get(e.user_id), e.timestamp) for e in cases]
    assert np.allclose(probability, expected, rtol=1e-12)


def test_purchases_are_drawn_at_the_ground_truths_rate_in_every_probability_band():
    """Over 20,000 events of distinct users, each fifth of the events by probability buys as often as the
    ground truth says, within 4.5 standard deviations; a draw unrelated to the features would miss the bands."""
    num = 20_000
    rng = random.Random(5)
    known = store(num)
    events = [event(user_id, T0 + timedelta(seconds=user_id / 100), random_pages(rng)) for user_id in range(num)]
    probability = np.array([documented_probability(e.pages, known.get(e.user_id), e.timestamp) for e in events])
    buyers = {purchase.user_id for purchase in OutcomeSimulation(known, WINDOW_S, seed=11).draw(events)}
    bought = np.array([e.user_id in buyers for e in events])
    bands = np.array_split(np.argsort(probability), 5)
    assert probability[bands[-1]].mean() > 3 * probability[bands[0]].mean(), "the bands must differ for the test to mean anything"
    for band in bands:
        expected = probability[band].sum()
        sd = math.sqrt((probability[band] * (1 - probability[band])).sum())
        assert abs(bought[band].sum() - expected) < 4.5 * sd, (bought[band].sum(), expected, sd)


def test_each_purchase_follows_its_event_within_the_window():
    """Every delay is in (0, LABEL_WINDOW_S], and they spread over the whole window."""
    window_s = 3
    simulation = OutcomeSimulation({}, window_s, seed=2)
    events = [event(user_id, T0 + timedelta(milliseconds=user_id), ("product", "cart", "checkout")) for user_id in range(3_000)]
    purchases = simulation.draw(events)
    at = {e.user_id: e.timestamp for e in events}
    delays = [(p.timestamp - at[p.user_id]).total_seconds() for p in purchases]
    assert len(purchases) > 300
    assert all(0 < delay <= window_s for delay in delays)
    assert min(delays) < 0.1 * window_s and max(delays) > 0.9 * window_s
    assert len({p.purchase_id for p in purchases}) == len(purchases)


def test_cold_users_buy_at_the_cold_start_rate_and_at_a_plausible_amount():
    """Users the store does not know buy at the documented cold-start probability, amounts positive, in cents."""
    simulation = OutcomeSimulation(store(10), WINDOW_S, seed=3)
    pages = ("home", "category", "product")
    purchases = simulation.draw([event(1_000 + i, pages=pages) for i in range(20_000)])
    p = documented_probability(pages, None, T0)
    assert abs(len(purchases) - 20_000 * p) < 4.5 * math.sqrt(20_000 * p * (1 - p))
    amounts = [purchase.amount for purchase in purchases]
    assert all(a > 0 and round(a, 2) == a for a in amounts)
    assert 15 < statistics.median(amounts) < 80  # around the loader's typical spend level, e^3.6 ≈ 37


def test_known_users_spend_around_their_own_mean():
    """A known user's purchases centre on the mean of their last three."""
    known = {user_id: UserFeatures(200.0, 3, T0.timestamp() - DAY_S) for user_id in range(5_000)}
    purchases = OutcomeSimulation(known, WINDOW_S, seed=4).draw(
        [event(user_id, pages=("cart", "cart", "checkout")) for user_id in range(5_000)]
    )
    assert len(purchases) > 1_000
    assert 180 < statistics.median(p.amount for p in purchases) < 220


def test_a_purchase_counts_from_its_own_moment_on():
    """Features asked for before a recorded purchase are the store's; from its moment on they include it."""
    at_s = T0.timestamp()
    users = SimulatedUsers({1: UserFeatures(40.0, 5, at_s - 10 * DAY_S)})
    users.record_purchase(1, at_s + 60, 100.0)
    users.record_purchase(2, at_s + 30, 12.5)  # a cold user
    assert users.features_at(1, at_s) == UserFeatures(40.0, 5, at_s - 10 * DAY_S)
    assert users.features_at(2, at_s) is None
    assert users.features_at(1, at_s + 61) == UserFeatures((40.0 * 2 + 100.0) / 3, 6, at_s + 60, False)
    assert users.features_at(2, at_s + 30) == UserFeatures(12.5, 1, at_s + 30, False)
    users.record_purchase(2, at_s + 90, 20.0)
    assert users.features_at(2, at_s + 100) == UserFeatures((12.5 + 20.0) / 2, 2, at_s + 90, False)


def test_a_users_own_simulated_purchase_feeds_the_ground_truth_of_their_later_events():
    """Once a user bought in the simulation, a later event's probability is the ground truth of the
    store's features updated by that purchase (count, mean of the last three, recency from it)."""
    known = UserFeatures(30.0, 2, T0.timestamp() - 90 * DAY_S)
    simulation = OutcomeSimulation({5: known}, WINDOW_S, seed=6)
    purchases = []
    for n in range(200):
        purchases = simulation.draw([event(5, T0, ("cart", "cart", "checkout"), n)])
        if purchases:
            break
    assert purchases, "a user at checkout buys within 200 tries"
    bought = purchases[0]
    later = bought.timestamp + timedelta(hours=1)
    (probability,), (features,) = simulation.probabilities([event(5, later, ("home", "home", "home"), 999)])
    expected = UserFeatures((30.0 * 2 + bought.amount) / 3, 3, bought.timestamp.timestamp(), False)
    assert features == expected
    assert math.isclose(probability, documented_probability(("home", "home", "home"), expected, later), rel_tol=1e-12)
    assert probability > documented_probability(("home", "home", "home"), known, later)  # a recent purchase pulls it up


def test_the_same_seed_draws_the_same_purchases():
    """Two simulations with one seed make the same users buy at the same moments for the same amounts; another seed does not."""
    rng = random.Random(9)
    events = [event(user_id % 500, T0 + timedelta(seconds=user_id), random_pages(rng), user_id) for user_id in range(2_000)]

    def outcome(seed: int) -> list[tuple[int, float, datetime]]:
        simulation = OutcomeSimulation(store(500), WINDOW_S, seed)
        drawn = simulation.draw(events[:700]) + simulation.draw(events[700:])
        return [(p.user_id, p.amount, p.timestamp) for p in drawn]

    assert outcome(1) == outcome(1)
    assert outcome(1) != outcome(2)
