"""List the registered model versions, promote one to serve, or roll back to the one that served before.

    python -m model.registry [--registry DIR] list
    python -m model.registry [--registry DIR] promote VERSION
    python -m model.registry [--registry DIR] rollback

DIR defaults to MODEL_URI when that is a local registry. When MODEL_URI is models:/NAME@ALIAS, the same
commands list the MLflow model's versions and move its alias instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from config import Settings
from errors import PredictionError, SetupError
from model.local_registry import LocalRegistry, RegistryError, VersionInfo
from model.sources import is_models_uri, local_path
from runtime.startup import start_program

SERVING_MARK = "*"


def main(argv: Sequence[str] | None = None, *, model_uri: str | None = None, mlflow_tracking_uri: str | None = None) -> int:
    """Run one command; `model_uri` and `mlflow_tracking_uri` stand in for the settings (read only when needed)."""
    parser = argparse.ArgumentParser(prog="python -m model.registry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", metavar="DIR", help="the registry directory, or models:/NAME@ALIAS (default: MODEL_URI)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="every registered version, the serving one marked")
    commands.add_parser("promote", help="make VERSION serve").add_argument("version", metavar="VERSION")
    commands.add_parser("rollback", help="make the version that served before serve again")
    args = parser.parse_args(argv)

    settings = _SettingsOnDemand()
    try:
        if args.registry:
            target = args.registry
            registry_dir = Path(args.registry)  # given on the command line: relative to the working directory
        else:
            target = model_uri if model_uri is not None else settings.get().model_uri
            registry_dir = local_path(target)
        if is_models_uri(target):
            tracking_uri = mlflow_tracking_uri if mlflow_tracking_uri is not None else settings.get().mlflow_tracking_uri
            return _run_on_mlflow(args, target, tracking_uri)
        return _run_on_local(args, _open_local(registry_dir))
    except PredictionError as exc:  # a setup to fix (exit 2), or an MLflow server away (exit 1): one line either way
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _open_local(root: Path) -> LocalRegistry:
    if root.suffix == ".joblib" or root.is_file():
        raise RegistryError(f"{root} is a model file, not a registry: pass --registry DIR")
    if not root.is_dir():
        raise RegistryError(f"no registry at {root}: train a model with `make train` first")
    return LocalRegistry(root)


def _run_on_local(args: argparse.Namespace, registry: LocalRegistry) -> int:
    if args.command == "promote":
        previous = registry.promote(args.version)
        print(f"{args.version} already serves; nothing changed" if previous == args.version
              else f"promoted {args.version} (was {previous or 'nothing'})")
    elif args.command == "rollback":
        previous = registry.serving()
        print(f"rolled back to {registry.rollback()} (was {previous})")
    else:
        _print_local_list(registry)
    return 0


def _print_local_list(registry: LocalRegistry) -> None:
    versions, serving, history = registry.versions(), registry.serving(), registry.history()
    print(f"registry {registry.root}")
    if not versions:
        print("no versions registered yet: train one with `make train`")
        return
    headers = ["", "VERSION", "TRAINED AT", "ESTIMATOR", "ROC AUC", "ECE", "GATES"]
    print("\n".join(_table(headers, [_local_row(info, serving) for info in versions])))
    if serving is None:
        print("no version serves: promote one with `python -m model.registry promote VERSION`")
    else:
        print(f"{SERVING_MARK} serving; " + (f"rollback returns to {history[0]}" if history else "nothing to roll back to"))


def _local_row(info: VersionInfo, serving: str | None) -> list[str]:
    gates = {True: "passed", False: "FAILED", None: "?"}[info.gates_passed]
    return [SERVING_MARK if info.version == serving else "", info.version, info.trained_at or "?", info.estimator or "?",
            _number(info.roc_auc), _number(info.ece), gates]


def _run_on_mlflow(args: argparse.Namespace, uri: str, tracking_uri: str) -> int:
    if not tracking_uri.strip():
        raise SetupError(f"MLFLOW_TRACKING_URI is empty but the registry is {uri}: set it to the MLflow tracking server")
    from model import mlflow_registry  # imports mlflow, which only this kind of registry needs

    name, alias = mlflow_registry.parse_models_uri(uri)
    rows = mlflow_registry.list_versions(tracking_uri, name)
    previous = next((str(row["version"]) for row in rows if _holds_alias(row, alias)), "nothing")
    if args.command == "promote":
        mlflow_registry.set_alias(tracking_uri, name, alias, args.version)
        print(f"promoted {args.version} to {name}@{alias} (was {previous})")
    elif args.command == "rollback":
        print(f"rolled back {name}@{alias} to {mlflow_registry.rollback_alias(tracking_uri, name, alias)} (was {previous})")
    elif not rows:
        print(f"no versions of {name} registered at {tracking_uri}")
    else:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        marked = [[SERVING_MARK if _holds_alias(row, alias) else "", *(_cell(row.get(key)) for key in columns)] for row in rows]
        print(f"registered model {name} at {tracking_uri}")
        print("\n".join(_table(["", *(key.upper().replace("_", " ") for key in columns)], marked)))
        print(f"{SERVING_MARK} holds the alias {alias}")
    return 0


def _holds_alias(row: dict[str, Any], alias: str) -> bool:
    return alias in (row.get("aliases") or ())


def _cell(value: object) -> str:
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "" if value is None else str(value)


def _number(value: float | None) -> str:
    return "?" if value is None else f"{value:.4f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in [headers, *rows]]


class _SettingsOnDemand:
    """The settings, loaded (and logging set up) only when the command line does not say all that is needed."""

    def __init__(self, load: Callable[[], Settings] = start_program) -> None:
        self._load = load
        self._settings: Settings | None = None

    def get(self) -> Settings:
        if self._settings is None:
            self._settings = self._load()
        return self._settings


if __name__ == "__main__":
    raise SystemExit(main())
