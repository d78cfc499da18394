"""Print a `.env` file's values as shell assignments, for stack/lib.sh to eval.

    .venv/bin/python stack/env_file.py PATH/.env

It uses config/'s own reader, so the local stack and the programs agree on every value (a
`#` or `$` in a password included), skip the variables the environment sets, and stop on an
unknown key with the same message. Exit code 2 on such a key, as the programs.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import KNOWN_VARIABLES, ConfigError, values_from_env_file


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        values = values_from_env_file(env_file=Path(argv[1]))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    for name, value in values.items():
        # Only names we know, so a key can never smuggle shell code into the eval.
        if name in KNOWN_VARIABLES:
            print(f"{name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
