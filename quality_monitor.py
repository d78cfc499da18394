"""Measure the live quality of every model version that serves or shadows.

    python quality_monitor.py [--snapshot-interval-s S]

Reads the predictions on OUTPUT_TOPIC (and SHADOW_OUTPUT_TOPIC) and the purchases on PURCHASES_TOPIC,
labels each prediction once its window has closed by event time (positive when the user bought within
LABEL_WINDOW_S after the event), and measures ROC AUC, log loss, Brier score and calibration over the
last QUALITY_WINDOW labels of each model version. The figures are on /metrics at QUALITY_METRICS_PORT
and, every few seconds, on QUALITY_TOPIC (`consumer.py --live` shows them); that snapshot is also where
a restarted monitor resumes its counts. Details in docs/model-quality.md.

SIGINT or SIGTERM publishes a last snapshot and stops, with exit code 0.
"""

from __future__ import annotations

from runtime.shutdown import catch_stop_signals_early

# Before anything slow: a stop request during the imports must not kill the process outright.
catch_stop_signals_early()

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from config import describe_settings  # noqa: E402
from runtime.startup import start_program  # noqa: E402

log = logging.getLogger("quality_monitor")

DEFAULT_SNAPSHOT_INTERVAL_S = 5.0


def interval_seconds(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} is not between 0.1 and 3600 seconds")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--snapshot-interval-s", type=interval_seconds, default=DEFAULT_SNAPSHOT_INTERVAL_S,
        help="seconds between snapshots (and checkpoints): what a restart reads again at most (default %(default)s)",
    )
    parser.add_argument("--check-config", action="store_true", help="print the effective settings (password masked) and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = start_program()
    if args.check_config:
        print(describe_settings(settings))
        return 0
    # Imported here, not at the top, so that --help and a bad setting answer at once.
    import asyncio

    from errors import SetupError
    from quality.monitor import run_monitor
    from service.failures import exit_code

    try:
        asyncio.run(run_monitor(settings, snapshot_interval_s=args.snapshot_interval_s))
    except SetupError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except Exception as exc:
        # A bug, not an outage (those are retried). The last snapshot stands: a restart resumes from it.
        log.exception("stopped by an unexpected error; a restart resumes from the last snapshot")
        return exit_code(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
