"""Print purchase predictions from OUTPUT_TOPIC as they arrive, one readable line each.

    python consumer.py [--count N] [--from-beginning] [--idle-timeout-s S] [--dead-letters | --live]

`--dead-letters` reads DLQ_TOPIC instead and prints why each event was rejected. `--live` reads
both and keeps one screen up to date: the rate, latency percentiles, a histogram of the
probabilities, dead letters by kind and predictions per model version, and, from the quality
monitor's latest snapshot on QUALITY_TOPIC, each model version's live AUC beside its training AUC,
log loss, Brier score, calibration and labelled count, with how far its watermark trails now.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import TYPE_CHECKING

from config import describe_settings
from runtime.shutdown import stop_on_signals
from runtime.startup import start_program

# aiokafka and msgspec load only once the arguments are good, so --help, --check-config and
# a bad setting answer at once.
if TYPE_CHECKING:
    from terminal.prediction_reader import ReadPlan


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=None, help="exit after N records (default: run until Ctrl-C)")
    parser.add_argument("--from-beginning", action="store_true", help="start at the oldest record instead of new ones")
    parser.add_argument("--idle-timeout-s", type=float, default=None, help="exit after S seconds without a new record")
    parser.add_argument("--dead-letters", action="store_true", help="read the dead-letter topic instead of predictions")
    parser.add_argument("--live", action="store_true",
                        help="one live screen of rates, latencies, probabilities, dead letters and model quality")
    parser.add_argument("--check-config", action="store_true", help="print the effective settings (password masked) and exit")
    args = parser.parse_args(argv)
    if (args.count is not None and args.count < 1) or (args.idle_timeout_s is not None and args.idle_timeout_s <= 0):
        parser.error("--count and --idle-timeout-s must be positive")
    if args.live and args.dead_letters:
        parser.error("--live shows the dead letters too; drop --dead-letters")
    return args


async def run(settings, plan: ReadPlan) -> None:
    from terminal.prediction_reader import read_records

    stop = asyncio.Event()
    stop_on_signals(stop)
    summary = await read_records(settings, plan, stop)
    print(summary.render(plan.topic), flush=True)


async def run_live(settings, plan: ReadPlan) -> None:
    from terminal.live_reader import watch_live

    stop = asyncio.Event()
    stop_on_signals(stop)
    started = time.monotonic()
    tally = await watch_live(settings, plan, stop)
    print(tally.summary(time.monotonic() - started), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = start_program()
    if args.check_config:
        print(describe_settings(settings))
        return 0
    from aiokafka.errors import KafkaError

    from errors import SetupError
    from messaging.kafka_security import kafka_refusal
    from terminal.prediction_reader import ReadPlan

    topic = settings.dlq_topic if args.dead_letters else settings.output_topic
    plan = ReadPlan(topic, args.count, args.from_beginning, args.idle_timeout_s, args.dead_letters)
    try:
        asyncio.run(run_live(settings, plan) if args.live else run(settings, plan))
    except SetupError as exc:  # credentials, a certificate or a grant Kafka refused: retrying will not help
        print(f"cannot read {topic} from Kafka at {settings.kafka_bootstrap_servers}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KafkaError as exc:
        refusal = kafka_refusal(exc, settings)
        if refusal is not None:
            print(f"cannot read {topic} from Kafka at {settings.kafka_bootstrap_servers}: {refusal}", file=sys.stderr)
            return refusal.exit_code
        print(
            f"cannot read {topic} from Kafka at {settings.kafka_bootstrap_servers}: {exc} (is it running? `make up` starts one)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
