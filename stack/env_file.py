"""Print a `.env` file's values as shell assignments, for stack/lib.sh to eval.

    .venv/bin/python stack/env_file.py PATH/.env

It uses config/'s own reader, so the local stack and the programs agree on every value (a
`#` or `$` in a password included), skip the variables the environment sets, and stop on an
unknown key with the same message. Exit code 2 on such a key, as the programs. A secret and its
X_FILE spelling count as one variable there.

Every value leaves shell-quoted, so the eval can only assign it; what a value may hold is
checked by lib.sh (check_stack_values) after the environment and the defaults are merged in,
one set of rules for both sources. A NUL is refused here: a shell variable cannot hold one,
and bash would drop it silently, changing the value.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import KNOWN_VARIABLES, SECRET_FILE_VARIABLES, ConfigError, values_from_env_file

FILE_SUFFIX = "_FILE"


def decided_by_environment(name: str) -> bool:
    """A secret X and its X_FILE are one setting: when the environment sets either, .env gives neither (as in config/)."""
    pair = {name, name + FILE_SUFFIX} if name + FILE_SUFFIX in SECRET_FILE_VARIABLES else set()
    if name in SECRET_FILE_VARIABLES:
        pair = {name, name.removesuffix(FILE_SUFFIX)}
    return any(variable in os.environ for variable in pair)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        values = values_from_env_file(env_file=Path(argv[1]))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    known = {name: value for name, value in values.items() if name in KNOWN_VARIABLES and not decided_by_environment(name)}
    for name, value in known.items():
        if "\0" in value:
            print(f"configuration error: {name} in {argv[1]} holds a NUL character, which the stack scripts cannot carry", file=sys.stderr)
            return 2
    for name, value in known.items():
        # Only names we know, so a key can never smuggle shell code into the eval.
        print(f"{name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
