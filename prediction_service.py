"""The real-time purchase-prediction service.

    python prediction_service.py

Consumes browsing events from INPUT_TOPIC, joins each user's offline features from MySQL,
predicts the purchase probability and publishes it to OUTPUT_TOPIC; invalid events go to
DLQ_TOPIC with the reason. Settings come from the environment and `.env` (see .env.example).
Run several copies with the same KAFKA_GROUP_ID to share the partitions (on one machine, each
with its own METRICS_PORT: /metrics, /healthz and /readyz are served there).

SIGINT or SIGTERM stops it cleanly, with exit code 0, within SHUTDOWN_TIMEOUT_S.
"""

from __future__ import annotations

from runtime.shutdown import catch_stop_signals_early

# Before anything slow: a stop request during the imports or the model load must not kill
# the process outright.
catch_stop_signals_early()

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from config import describe_settings  # noqa: E402
from runtime.startup import start_program  # noqa: E402

log = logging.getLogger("prediction_service")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-config", action="store_true", help="print the effective settings (password masked) and exit")
    args = parser.parse_args()
    settings = start_program()
    if args.check_config:
        print(describe_settings(settings))
        return 0
    # Imported here, not at the top, so that --help and a bad setting answer at once.
    import asyncio

    from errors import SetupError
    from service.app import run_service
    from service.failures import exit_code

    try:
        asyncio.run(run_service(settings))
    except SetupError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except Exception as exc:
        code = exit_code(exc)
        if code == SetupError.exit_code:
            # A MySQL error: outages are retried inside, so what reaches here is a setting to fix.
            log.error("MySQL at %s:%s refused: %s; check the MYSQL_* settings", settings.mysql_host, settings.mysql_port, exc)
            return code
        # A bug, not an outage (those are retried). Nothing in hand was committed, so a restart
        # replays it; say so rather than leave only a traceback.
        log.exception("stopped by an unexpected error; uncommitted events will be processed again on restart")
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
