"""Wait until the quality monitor has labelled what a run sent, then print its live quality per model version.

    python -m tools.live_quality --streams-ended-at UNIX_S [--run-started-at UNIX_S] [--timeout-s 120] [--version V ...]

The monitor labels a prediction once its watermark (the newest event time seen, less
LABEL_LATE_ALLOWANCE_S) has passed the end of the prediction's LABEL_WINDOW_S (docs/model-quality.md).
Once the event streams have stopped, the furthest the watermark gets is their end less the
allowance: this follows the monitor's snapshots on QUALITY_TOPIC until one is that far on, then
prints one line on the labelling and one per model version, its live AUC beside its training AUC.
Figures over too few labels, or over one class only, are said to be so rather than printed. A
monitor resumed from an earlier run's checkpoint keeps that run's labels in a version's window
(and its counters): a window reaching back before --run-started-at is said to.

Exits 0 after printing; 1 when no such snapshot comes within the timeout, saying how far the
monitor got. tools/demo.sh runs it once its streams have stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from config import Settings
from quality.snapshot import ModelQuality, QualitySnapshot
from runtime.startup import start_program
from terminal.quality_feed import QualityFeed
from terminal.quality_view import aware

# Records stamped just before the stop still move the watermark; a second covers the last of them.
END_SLACK_S = 1.0
POLL_S = 0.2
# Below these, an AUC says more about chance than about the model: the line says so instead.
MIN_LABELLED = 200
MIN_PER_CLASS = 20


def watermark_wanted(streams_ended_at: datetime, settings: Settings) -> datetime:
    """The watermark at which everything the streams sent that can be labelled has been."""
    return streams_ended_at - timedelta(seconds=settings.label_late_allowance_s + END_SLACK_S)


def _figure(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3f}"


def _named(model_version: str, role: str) -> str:
    return f"model {model_version}" if role == "serving" else f"model {model_version} ({role})"


def quality_line(model: ModelQuality, run_started: datetime | None = None) -> str:
    """One model version's live quality over its window of labels, read against its training AUC."""
    name = _named(model.model_version, model.role)
    trained = f"training AUC {_figure(model.training_auc)}"
    if run_started is not None and model.window_start is not None and aware(model.window_start) < run_started:
        trained += f"; the window reaches back to {aware(model.window_start).isoformat(timespec='seconds')}, before this run"
    if model.window == 0:
        return f"live quality: {name}: no prediction labelled yet ({trained})"
    positives = round((model.positive_rate or 0.0) * model.window)
    negatives = model.window - positives
    if model.auc is None:
        outcome = "every one followed by a purchase" if negatives == 0 else "none followed by a purchase"
        return (f"live quality: {name}: no AUC over {model.window} labelled predictions, {outcome}: an AUC needs"
                f" both outcomes ({trained})")
    if model.window < MIN_LABELLED or min(positives, negatives) < MIN_PER_CLASS:
        return (f"live quality: {name}: only {model.window} labelled predictions ({positives} followed by a purchase),"
                f" too few for a meaningful AUC ({trained})")
    return (
        f"live quality: {name} AUC {model.auc:.3f} over {model.window} labelled predictions ({trained}),"
        f" log loss {_figure(model.log_loss)}, positive rate {_figure(model.positive_rate)}"
        f" (mean probability {_figure(model.mean_probability)})"
    )


def labelling_line(snapshot: QualitySnapshot, settings: Settings) -> str:
    """Where the labelling stands: the watermark, and what is still waiting or came too late to be labelled."""
    watermark = "none" if snapshot.watermark is None else aware(snapshot.watermark).isoformat(timespec="seconds")
    return (
        f"labelled up to event time {watermark} (LABEL_WINDOW_S {settings.label_window_s} s,"
        f" LABEL_LATE_ALLOWANCE_S {settings.label_late_allowance_s} s): {snapshot.pending} predictions still in their"
        f" window; in all the monitor has counted on {settings.quality_topic}, {snapshot.late_predictions} predictions"
        f" arrived after their window had closed and are not labelled, {snapshot.late_purchases} purchases came late"
    )


def report_lines(
    snapshot: QualitySnapshot, settings: Settings, versions: Sequence[str] = (), run_started: datetime | None = None
) -> list[str]:
    """The labelling line, then one line per model: the versions asked for (serving and shadow), or every one."""
    models = sorted(snapshot.models, key=lambda model: (model.role != "serving", model.model_version))
    lines = [labelling_line(snapshot, settings)]
    for version in versions:
        found = [model for model in models if model.model_version == version]
        if not found:
            found = [ModelQuality(model_version=version, role="serving", training_auc=None, labelled=0, window=0, auc=None,
                                  log_loss=None, brier=None, ece=None, mean_probability=None, positive_rate=None)]
        lines.extend(quality_line(model, run_started) for model in found)
    if not versions:
        lines.extend(quality_line(model, run_started) for model in models)
    return lines


def far_enough(snapshot: QualitySnapshot | None, wanted: datetime) -> bool:
    return snapshot is not None and snapshot.watermark is not None and aware(snapshot.watermark) >= wanted


async def wait_for_snapshot(settings: Settings, wanted: datetime, timeout_s: float) -> tuple[QualitySnapshot | None, str | None]:
    """The first snapshot with its watermark at `wanted` or later, or else the last seen and why none came."""
    feed = QualityFeed(settings)
    stop = asyncio.Event()
    following = asyncio.create_task(feed.follow(stop))
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not following.done():
            if far_enough(feed.state.snapshot, wanted):
                return feed.state.snapshot, None
            await asyncio.sleep(POLL_S)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await following
    return feed.state.snapshot, feed.state.problem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams-ended-at", type=float, required=True, metavar="UNIX_S",
                        help="when the last event stream was stopped, in seconds since the epoch")
    parser.add_argument("--run-started-at", type=float, default=None, metavar="UNIX_S",
                        help="when the run's first program started: a window reaching back before it is said to")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="how long to wait for the monitor (default 120)")
    parser.add_argument("--version", action="append", default=[], dest="versions",
                        help="a model version to report on, repeatable (default: every one in the snapshot)")
    args = parser.parse_args(argv)
    settings = start_program()
    wanted = watermark_wanted(datetime.fromtimestamp(args.streams_ended_at, UTC), settings)
    snapshot, problem = asyncio.run(wait_for_snapshot(settings, wanted, args.timeout_s))
    if snapshot is None or not far_enough(snapshot, wanted):
        reached = "no snapshot" if snapshot is None or snapshot.watermark is None \
            else f"a watermark of {aware(snapshot.watermark).isoformat(timespec='seconds')} at most"
        print(f"the quality monitor's snapshots on {settings.quality_topic} showed {reached} within {args.timeout_s:g} s,"
              f" not yet {wanted.isoformat(timespec='seconds')}{f' ({problem})' if problem else ''}: is quality_monitor.py"
              " running and keeping up? Its log says.", file=sys.stderr)
        return 1
    run_started = None if args.run_started_at is None else datetime.fromtimestamp(args.run_started_at, UTC)
    print("\n".join(report_lines(snapshot, settings, args.versions, run_started)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
