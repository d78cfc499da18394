from service.observe.histogram import Histogram


def test_a_value_on_a_bound_counts_in_that_bucket_as_prometheus_le_does():
    """0.01 falls in the le=0.01 bucket, 0.011 in the next, and anything past the last bound in +Inf."""
    histogram = Histogram([0.01, 0.1])
    for value in (0.01, 0.011, 5.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(0.01, 1), (0.1, 2), (float("inf"), 3)]
    assert histogram.count == 3
    assert abs(histogram.sum - 5.021) < 1e-12


def test_observing_many_at_once_equals_observing_each():
    """A batch of latencies lands in the same buckets, sum and count as one call per value."""
    values = [0.001, 0.02, 0.02, 0.3, 7.0, 0.0]
    one_by_one, at_once = Histogram([0.01, 0.1, 1.0]), Histogram([0.01, 0.1, 1.0])
    for value in values:
        one_by_one.observe(value)
    at_once.observe_many(iter(values))
    assert at_once.cumulative() == one_by_one.cumulative()
    assert (at_once.sum, at_once.count) == (one_by_one.sum, one_by_one.count)
