"""Secret settings taken from files: for every secret setting X, X_FILE names a file holding its value.

A password in a file (a docker or Kubernetes secret, a file only its owner reads) stays out of the
environment, where `ps e`, /proc and crash reports can see it. This is the only module that opens
those files; the value read goes through X's own parser, as if X had been set.

X and X_FILE are two spellings of one setting: the environment wins over `.env` for the pair as it
does for any variable, and one place setting both is an error, since either one would be a guess.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from config.settings import Settings
from config.values import PROJECT_ROOT, ConfigError

FILE_SUFFIX = "_FILE"
SECRET_SETTINGS: tuple[str, ...] = tuple(f.metadata["env"] for f in dataclasses.fields(Settings) if f.metadata["secret"])
SECRET_FILE_VARIABLES: frozenset[str] = frozenset(name + FILE_SUFFIX for name in SECRET_SETTINGS)


def read_secret_file(variable: str, raw: str) -> str:
    """The content of the file `raw` names, without its trailing line end; ConfigError naming `variable` if unreadable."""
    if not raw.strip():
        raise ConfigError(variable, "must name a file holding the secret")
    path = PROJECT_ROOT / Path(raw.strip())
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(variable, f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(variable, f"{path} is not UTF-8 text") from None
    # The line end an editor or `echo` adds is no part of the secret; anything before it is.
    return content.removesuffix("\n").removesuffix("\r")


def take_secret_files(merged: dict[str, str], sources: dict[str, str], environ: Mapping[str, str]) -> None:
    """Replace each X_FILE of `merged` by X read from that file, and note where it came from in `sources`.

    `merged` holds `.env` under `environ`; `sources` says where each of its values came from.
    """
    for name in SECRET_SETTINGS:
        file_variable = name + FILE_SUFFIX
        # The pair is decided where it is set: in the environment if either is, else in `.env`.
        place = environ if name in environ or file_variable in environ else merged
        if name in place and file_variable in place:
            raise ConfigError(file_variable, f"and {name} are both set in {sources[name]}; set only one of them")
        if file_variable in place:
            merged[name] = read_secret_file(file_variable, merged[file_variable])
            sources[name] = f"{file_variable} in {sources[file_variable]}"
        merged.pop(file_variable, None)
        sources.pop(file_variable, None)
