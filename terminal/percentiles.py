"""Latency percentiles as the readers print them."""

from __future__ import annotations

import math
from collections.abc import Iterable

SHOWN = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


def percentile(ordered: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least a share `q` of the values at or below it."""
    if not ordered:
        raise ValueError("no values")
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def latency_percentiles(values_ms: Iterable[float]) -> dict[str, float]:
    """p50, p95, p99 and max of `values_ms`; empty for no values."""
    ordered = sorted(values_ms)
    if not ordered:
        return {}
    return {**{name: percentile(ordered, q) for name, q in SHOWN}, "max": ordered[-1]}


def describe_latency(values_ms: Iterable[float]) -> str:
    """`p50 12 ms, p95 30 ms, p99 41 ms, max 52 ms`, or an empty string for no values."""
    return ", ".join(f"{name} {value:.0f} ms" for name, value in latency_percentiles(values_ms).items())
