"""Emit synthetic browsing events to INPUT_TOPIC.

    python producer.py --count 300 --rate 50 --invalid-ratio 0.05

Events are for users 0..USERS-1 (the offline store's loader uses the same ids), plus a few
unknown users; `--invalid-ratio` mixes in malformed events to show the dead-letter path.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import TYPE_CHECKING

from config import describe_settings
from runtime.shutdown import stop_on_signals
from runtime.startup import start_program

# aiokafka and the event generators load only once the arguments are good, so --help,
# --check-config and a bad setting answer at once.
if TYPE_CHECKING:
    from terminal.event_producer import TrafficPlan

log = logging.getLogger("producer")


def ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100, help="events to send (default 100)")
    parser.add_argument("--rate", type=float, default=10.0, help="events per second; 0 for as fast as possible (default 10)")
    parser.add_argument("--seed", type=int, default=None, help="random seed for a repeatable stream (default: random)")
    parser.add_argument("--invalid-ratio", type=ratio, default=0.0, help="share of invalid events, 0..1 (default 0)")
    parser.add_argument("--users", type=int, default=10_000, help="draw user ids from 0..N-1 (default 10000, as the loader)")
    parser.add_argument(
        "--unknown-user-ratio", type=ratio, default=0.02, help="share of events from users the store does not know (default 0.02)"
    )
    parser.add_argument("--check-config", action="store_true", help="print the effective settings (password masked) and exit")
    args = parser.parse_args(argv)
    if args.count < 0 or args.rate < 0 or args.users < 1:
        parser.error("--count and --rate must not be negative, and --users must be at least 1")
    return args


async def run(settings, plan: TrafficPlan) -> None:
    from terminal.event_producer import produce_events
    from terminal.progress import progress_on

    stop = asyncio.Event()
    stop_on_signals(stop)
    with progress_on(sys.stdout, plan.count, f"sending to {settings.input_topic}") as progress:
        report = await produce_events(settings, plan, stop, progress)
    print(report.summary(settings.input_topic), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = start_program()
    if args.check_config:
        print(describe_settings(settings))
        return 0
    from aiokafka.errors import KafkaError

    from errors import SetupError
    from messaging.kafka_security import kafka_refusal
    from terminal.event_producer import TrafficPlan

    plan = TrafficPlan(args.count, args.rate, args.seed, args.invalid_ratio, args.users, args.unknown_user_ratio)
    try:
        asyncio.run(run(settings, plan))
    except SetupError as exc:  # credentials, a certificate or a grant Kafka refused: retrying will not help
        print(f"cannot send to Kafka at {settings.kafka_bootstrap_servers}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KafkaError as exc:
        refusal = kafka_refusal(exc, settings)
        if refusal is not None:
            print(f"cannot send to Kafka at {settings.kafka_bootstrap_servers}: {refusal}", file=sys.stderr)
            return refusal.exit_code
        print(f"cannot send to Kafka at {settings.kafka_bootstrap_servers}: {exc} (is it running? `make up` starts one)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
