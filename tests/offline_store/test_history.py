from datetime import datetime, timedelta

from offline_store.history import generate_history


def test_history_generation_is_repeatable_and_spans_a_year():
    """The same seed gives the same history; every purchase lies in the year before as_of."""
    as_of = datetime(2026, 11, 26)
    first, second = generate_history(500, as_of, seed=9), generate_history(500, as_of, seed=9)
    assert first.user_ids.tolist() == second.user_ids.tolist() and first.purchased_at == second.purchased_at
    assert all(as_of - timedelta(days=365) <= t <= as_of for t in first.purchased_at)
    assert 0 < len(set(first.user_ids.tolist())) < 500, "some users have no history (cold start)"
