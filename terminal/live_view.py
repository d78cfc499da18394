"""What `consumer.py --live` shows: a running tally of predictions and dead letters, the model quality, and its picture.

The tally (`LiveTally`) is plain Python, so it can be tested without a terminal; `render` draws it
with rich, imported only when a live view is actually shown.

The model quality comes from the quality monitor's latest snapshot (terminal/quality_view.py):
per model version and role, the live AUC beside the training AUC and the calibration figures.

Two latencies are kept per prediction: the service's (`predicted_at` minus the event's timestamp,
independent of when this view reads it) and the reader's (receive time minus the event's
timestamp, what a downstream consumer experiences).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from events.schema import Prediction
from runtime.text import printable
from terminal.percentiles import latency_percentiles
from terminal.quality_view import QualityState, render_quality

if TYPE_CHECKING:  # rich loads only when a live view is shown
    from rich.console import Group, RenderableType
    from rich.table import Table

PROBABILITY_BINS = 10
RATE_WINDOW_S = 10.0
# Percentiles are over the most recent predictions, so the view follows the stream as it changes.
LATENCY_WINDOW = 5_000
BAR_CELLS = 40


@dataclass
class LiveTally:
    started: float = field(default_factory=time.monotonic)
    predictions: int = 0
    unreadable: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    probability_bins: list[int] = field(default_factory=lambda: [0] * PROBABILITY_BINS)
    service_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    received_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    _arrivals: deque[float] = field(default_factory=deque)

    def add_prediction(self, prediction: Prediction, received_at: datetime, now: float | None = None) -> None:
        self.predictions += 1
        self.by_model[prediction.model_version] += 1
        p = prediction.purchase_probability
        self.probability_bins[min(int(p * PROBABILITY_BINS), PROBABILITY_BINS - 1)] += 1
        self.service_ms.append((prediction.predicted_at - prediction.timestamp).total_seconds() * 1000)
        self.received_ms.append((received_at - prediction.timestamp).total_seconds() * 1000)
        self._arrivals.append(time.monotonic() if now is None else now)

    def add_dead_letter(self, kind: str) -> None:
        self.dead_letters[kind] += 1

    def rate(self, now: float | None = None) -> float:
        """Predictions per second over the last RATE_WINDOW_S (or since the start, if sooner)."""
        now = time.monotonic() if now is None else now
        while self._arrivals and self._arrivals[0] <= now - RATE_WINDOW_S:
            self._arrivals.popleft()
        window_s = min(RATE_WINDOW_S, now - self.started)
        return len(self._arrivals) / window_s if window_s > 0 else 0.0

    def summary(self, seconds: float) -> str:
        text = f"received {self.predictions} predictions and {sum(self.dead_letters.values())} dead letters in {seconds:.1f} s"
        return f"{text}; {self.unreadable} unreadable" if self.unreadable else text


def render(tally: LiveTally, now: float | None = None, quality: QualityState | None = None,
           wall_now: datetime | None = None) -> Group:
    """The live view as a rich renderable: rate and latency, probabilities, dead letters, models, and the
    model quality when `quality` is given. `now` is monotonic (the rate), `wall_now` the clock (the quality's age)."""
    from rich.console import Group
    from rich.table import Table

    rate = Table(
        title=f"{tally.predictions} predictions, {tally.rate(now):.1f}/s over the last {RATE_WINDOW_S:.0f} s", title_justify="left"
    )
    rate.add_column("latency (ms)")
    for name in ("p50", "p95", "p99", "max"):
        rate.add_column(name, justify="right")
    for label, values in (("service: predicted_at − event", tally.service_ms), ("reader: received − event", tally.received_ms)):
        shown = latency_percentiles(values)
        rate.add_row(label, *(f"{shown[name]:.0f}" if shown else "–" for name in ("p50", "p95", "p99", "max")))

    histogram = Table(title="purchase probability", title_justify="left")
    histogram.add_column("p")
    histogram.add_column("", no_wrap=True)
    histogram.add_column("count", justify="right")
    top = max(tally.probability_bins) or 1
    for index, count in enumerate(tally.probability_bins):
        low = index / PROBABILITY_BINS
        histogram.add_row(f"{low:.1f}–{low + 1 / PROBABILITY_BINS:.1f}", "█" * round(count / top * BAR_CELLS), str(count))

    parts: list[RenderableType] = [rate, histogram, _counts("dead letters by kind", "kind", tally.dead_letters),
                                   _counts("predictions by model version", "model", tally.by_model)]
    if quality is not None:
        parts.append(render_quality(quality, datetime.now(UTC) if wall_now is None else wall_now))
    return Group(*parts)


def _counts(title: str, heading: str, counts: Counter[str]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column(heading)
    table.add_column("count", justify="right")
    for key, count in counts.most_common():
        # Kinds and versions come off the wire: no control characters, and no "[red]" read as markup.
        table.add_row(escape(printable(key)), str(count))
    if not counts:
        table.add_row("none yet", "0")
    return table
