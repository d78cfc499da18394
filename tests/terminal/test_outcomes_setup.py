"""The warning that labels will run above the ground truth when a user's events share label windows."""

from terminal.outcomes_setup import shared_window_warning


def test_a_rate_that_gives_users_several_events_per_window_is_warned_about():
    """40 events/s over 1,000 users with a 60 s window gives each user about 2.4 more events in a window: said, with the way out."""
    warning = shared_window_warning(40.0, 1_000, 60)
    assert warning is not None
    assert "about 2.4 more events" in warning and "--users" in warning and "LABEL_WINDOW_S" in warning


def test_sparse_traffic_and_an_unpaced_run_are_not_warned_about():
    """10 events/s over 10,000 users with a 60 s window (0.06 per window) is fine; --rate 0 gives no rate to judge."""
    assert shared_window_warning(10.0, 10_000, 60) is None
    assert shared_window_warning(0.0, 10, 1_800) is None
