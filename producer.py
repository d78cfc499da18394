"""Emit synthetic browsing events to INPUT_TOPIC, and with --outcomes the purchases that follow them.

    python producer.py --count 300 --rate 50 --invalid-ratio 0.05
    python producer.py --count 3000 --rate 5 --outcomes

Events are for users 0..USERS-1 (the offline store's loader uses the same ids), plus a few
unknown users; `--invalid-ratio` mixes in malformed events to show the dead-letter path.

With `--outcomes`, each valid event's user buys within LABEL_WINDOW_S with the probability the
documented ground truth gives (model/ground_truth.py) for the user's features as of the event:
the offline store's, read once at start, plus the purchases this run made. A purchase goes to
PURCHASES_TOPIC at its own time, a uniform delay in (0, LABEL_WINDOW_S] after its event, so the
run ends up to LABEL_WINDOW_S after its last event (`--purchase-wait-s` shortens that wait;
purchases not yet due then, or at Ctrl-C, are dropped and counted).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from config import Settings, describe_settings
from runtime.shutdown import stop_on_signals
from runtime.startup import start_program

# aiokafka, the database client and the event generators load only once the arguments are good,
# so --help, --check-config and a bad setting answer at once.
if TYPE_CHECKING:
    from features.user import UserFeatures
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
    parser.add_argument(
        "--outcomes", action="store_true",
        help="also send the purchases that follow the events, drawn from the ground truth with the users' features"
             " from the offline store, to PURCHASES_TOPIC, each at its own time (within LABEL_WINDOW_S of its event)",
    )
    parser.add_argument(
        "--purchase-wait-s", type=float, default=None, metavar="S",
        help="with --outcomes: after the last event, wait at most S seconds for the purchases still to come, and drop"
             " the rest (default: until the last one, at most LABEL_WINDOW_S)",
    )
    parser.add_argument("--check-config", action="store_true", help="print the effective settings (password masked) and exit")
    args = parser.parse_args(argv)
    if args.count < 0 or args.rate < 0 or args.users < 1:
        parser.error("--count and --rate must not be negative, and --users must be at least 1")
    if args.purchase_wait_s is not None and not (args.outcomes and args.purchase_wait_s >= 0):
        parser.error("--purchase-wait-s goes with --outcomes, and must not be negative")
    return args


async def run(settings: Settings, plan: TrafficPlan, store_users: Mapping[int, UserFeatures] | None) -> None:
    from terminal.event_producer import produce_events
    from terminal.outcomes_progress import traffic_progress_on

    stop = asyncio.Event()
    stop_on_signals(stop)
    with traffic_progress_on(sys.stdout, plan.count, f"sending to {settings.input_topic}", plan.outcomes) as progress:
        report = await produce_events(settings, plan, stop, progress, store_users)
    print(report.summary(settings.input_topic, settings.purchases_topic), flush=True)


def read_store(settings: Settings) -> tuple[dict[int, UserFeatures] | None, int]:
    """The offline store's users for --outcomes, or None and the exit code after saying why they cannot be read."""
    import pymysql

    from errors import SetupError
    from terminal.outcomes_setup import read_store_users

    where = f"MySQL at {settings.mysql_host}:{settings.mysql_port}"
    try:
        store_users = asyncio.run(read_store_users(settings))
    except SetupError as exc:  # a setting, a grant or a store never loaded: its message says which
        print(f"cannot read the users' features for --outcomes from {where}: {exc}", file=sys.stderr)
        return None, exc.exit_code
    except pymysql.err.MySQLError as exc:
        print(f"cannot read the users' features for --outcomes from {where}: {exc} (is it running? `make up` starts one,"
              " and `make train` loads it)", file=sys.stderr)
        return None, 1
    log.info("read the features of %d users from the offline store; purchases go to %s within LABEL_WINDOW_S (%d s)"
             " of their event", len(store_users), settings.purchases_topic, settings.label_window_s)
    return store_users, 0


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

    plan = TrafficPlan(args.count, args.rate, args.seed, args.invalid_ratio, args.users, args.unknown_user_ratio,
                       outcomes=args.outcomes, purchase_wait_s=args.purchase_wait_s)
    store_users = None
    if plan.outcomes:
        from terminal.outcomes_setup import shared_window_warning

        store_users, exit_code = read_store(settings)
        if store_users is None:
            return exit_code
        warning = shared_window_warning(plan.rate_per_s, plan.users, settings.label_window_s)
        if warning:
            log.warning("%s", warning)
    try:
        asyncio.run(run(settings, plan, store_users))
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
