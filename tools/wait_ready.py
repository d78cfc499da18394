"""Wait until a prediction service reports ready on /readyz.

    python -m tools.wait_ready http://127.0.0.1:9400/readyz [--pid PID] [--timeout-s 180]

Exits 0 once /readyz answers 200; 1 if the process PID exits first or the timeout passes,
saying which readiness check was still failing. tools/demo.sh uses it so that no event is
sent before the service has joined its consumer group.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

POLL_S = 0.25


def readiness(url: str) -> tuple[bool, str]:
    """(ready, what /readyz said or why it could not be asked)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200, response.read().decode()
    except urllib.error.HTTPError as error:
        return False, error.read().decode()
    except OSError as error:  # not listening yet
        return False, f"no answer ({getattr(error, 'reason', error)})"


def alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def failing_checks(said: str) -> str:
    try:
        checks = json.loads(said)
    except ValueError:
        return said
    return ", ".join(name for name, passed in checks.items() if passed is False) or said


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--pid", type=int, default=None, help="give up as soon as this process has exited")
    parser.add_argument("--timeout-s", type=float, default=180.0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    said = ""
    while time.monotonic() - started < args.timeout_s:
        ready, said = readiness(args.url)
        if ready:
            print(f"service ready after {time.monotonic() - started:.1f} s: model loaded, group joined, MySQL reachable", flush=True)
            return 0
        if not alive(args.pid):
            print(f"the service exited before it was ready (last answer: {failing_checks(said)})", file=sys.stderr)
            return 1
        time.sleep(POLL_S)
    print(f"the service was not ready after {args.timeout_s:g} s; still failing: {failing_checks(said)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
