"""The fault harness: the service under kill -9, zombies, scaling, a dead broker and a dead or slow MySQL.

    make chaos        # or: .venv/bin/python -m tools.chaos [--reduced] [--guarantee both] [--events N] [--secured]

On a private Kafka and MariaDB of its own (the local stack only lends its cached Kafka jars), it
loads an offline store, trains a model, and runs three prediction_service.py instances in one
group on fresh topics while a steady load flows and faults are injected one after another:
kill -9 of an instance three times, a zombie (SIGSTOP past the session timeout, then SIGCONT),
scaling 3 → 1 → 3, the broker and MySQL killed and restarted after 20 s, and MySQL answering
3 s late for a while. Once the group has caught up it reads the output and dead-letter topics
(read_committed) and checks every event: none missing, none duplicated (under exactly_once),
every probability equal to an offline recomputation to 1e-9, every invalid record dead-lettered
once. It prints a table, writes JSON, and exits 1 if any check failed (2 if it could not run).
PROCESSING_GUARANTEE is passed to every instance; `both` runs the whole scenario once for each.
With --secured the instances and the load log in over a SASL_SSL listener (SCRAM-SHA-512, TLS with
the run's own CA), each as its own principal with only the ACLs stack/security.sh would grant it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tools.chaos.chaos_report import print_table, write_json
from tools.chaos.faults import FULL, REDUCED
from tools.chaos.scenario import ScenarioOptions, ScenarioResult, run_scenario
from tools.chaos.stack import private_stack

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / ".stack" / "chaos"
GUARANTEES = ("exactly_once", "at_least_once")
FULL_EVENTS = 100_000
REDUCED_EVENTS = 20_000
# The offline store's users (about 85% with history) and the load's.
USERS = 10_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.chaos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, help=f"events per run (default {FULL_EVENTS:,}; {REDUCED_EVENTS:,} with --reduced)")
    parser.add_argument("--rate", type=float, help="events per second (default: the events spread over the fault timeline)")
    parser.add_argument("--guarantee", choices=(*GUARANTEES, "both"), default="both",
                        help="PROCESSING_GUARANTEE of the instances; both runs exactly_once, then at_least_once (default both)")
    parser.add_argument("--reduced", action="store_true", help="fewer events and one fault of each kind, with shorter outages")
    parser.add_argument("--secured", action="store_true",
                        help="the instances and the load log in over SASL_SSL (SCRAM-SHA-512, TLS) with least-privilege ACLs")
    parser.add_argument("--json", type=Path, default=OUT_DIR / "results.json", help="the results (default .stack/chaos/results.json)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data and the instances' logs, under .stack/chaos/")
    args = parser.parse_args(argv)
    args.timeline = REDUCED if args.reduced else FULL
    if args.events is None:
        args.events = REDUCED_EVENTS if args.reduced else FULL_EVENTS
    if args.rate is None:
        args.rate = args.events / args.timeline.nominal_s
    if args.events < 1 or args.rate <= 0:
        parser.error("--events and --rate must be positive")
    return args


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM takes the same way out as Ctrl-C: every finally runs and every process is killed.
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    guarantees = GUARANTEES if args.guarantee == "both" else (args.guarantee,)
    options = ScenarioOptions(args.events, args.rate, args.timeline)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if args.keep:
        directory = OUT_DIR / stamp
        directory.mkdir(parents=True)
    else:
        # Short, under /tmp: MariaDB's socket path must stay within 108 bytes.
        directory = Path(tempfile.mkdtemp(prefix="chaos-"))
    # The harness's own Kafka clients complain through every outage it causes on purpose; the
    # progress lines say what happens, and their complaints go to a file (kept with --keep).
    logging.basicConfig(filename=directory / "harness.log", level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results: list[ScenarioResult] = []
    started = time.monotonic()
    try:
        with private_stack(directory, USERS, lambda message: print(f"[setup] {message}", flush=True), args.secured) as stack:
            for guarantee in guarantees:
                results.append(asyncio.run(run_scenario(stack, guarantee, options)))
    except KeyboardInterrupt:
        print("chaos: interrupted; every process it started has been killed", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"chaos: could not run the scenario: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    context = {
        "when": stamp, "reduced": args.reduced, "secured": args.secured, "events": args.events, "rate_per_s": round(args.rate, 1),
        "users": USERS, "seconds": round(time.monotonic() - started), "kept": str(directory) if args.keep else None,
    }
    write_json(args.json, results, context)
    print()
    print_table(results)
    print(f"\nwritten: {args.json}" + (f"; servers' data and logs in {directory}" if args.keep else " (--keep keeps the logs)"))
    return 0 if all(r.verdict.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(parse_args()))
