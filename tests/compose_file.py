"""Reading docker-compose.yml as `docker compose` does: its variables interpolated, and each
service's environment and dependencies in one form, for the static checks of the compose file."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
# Vendored with its provenance in tests/schemas/README.md, so any checkout can run this.
SCHEMA_FILE = REPO_ROOT / "tests" / "schemas" / "compose-spec.json"

KRAFT_KEYS = {
    "KAFKA_NODE_ID",
    "KAFKA_PROCESS_ROLES",
    "KAFKA_LISTENERS",
    "KAFKA_ADVERTISED_LISTENERS",
    "KAFKA_CONTROLLER_LISTENER_NAMES",
    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
    "KAFKA_CONTROLLER_QUORUM_VOTERS",
    "KAFKA_INTER_BROKER_LISTENER_NAME",
    "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS",
    "KAFKA_LOG_DIRS",
}

# `$$`, `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?message}`, `${NAME?message}`, `$NAME`.
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A `${NAME:?message}` variable was unset, or a `$` was malformed."""


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Substitute variables in one string the way compose does for the forms we use."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        current = environ.get(name)
        # With a colon, an empty value counts as unset; without one, only absence does.
        missing = current is None or (op is not None and op.startswith(":") and current == "")
        if op is None or not missing:
            return current if current is not None else ""
        if op.endswith("-"):
            return arg
        raise InterpolationError(f"{name}: {arg or 'required variable is not set'}")

    result = _INTERPOLATION.sub(replace, value)
    leftover = _INTERPOLATION.sub("", value).count("$")
    if leftover:
        raise InterpolationError(f"unsupported or malformed '$' in {value!r}")
    return result


def interpolate_tree(node: Any, environ: Mapping[str, str]) -> Any:
    """Apply `interpolate` to every string value (not key) in a loaded YAML document."""
    if isinstance(node, dict):
        return {key: interpolate_tree(value, environ) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, environ) for value in node]
    if isinstance(node, str):
        return interpolate(node, environ)
    return node


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment` as a dict of strings, from either the map or the list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)

    def text(value: Any) -> str:
        if value is None:
            return ""
        return str(value).lower() if isinstance(value, bool) else str(value)

    return {key: text(value) for key, value in env.items()}


def depends_on_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's dependencies mapped to their condition (the short list form means started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}
