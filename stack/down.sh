#!/usr/bin/env bash
# Stop the local Kafka + MariaDB started by stack/up.sh. Data is kept.
#   stack/down.sh          stop both (SIGTERM, up to 60s each, then SIGKILL)
#   stack/down.sh --purge  stop both and delete $STACK_DIR (all topics, databases, logs)
set -euo pipefail
# shellcheck source=stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=0
case "${1:-}" in
    "") ;;
    --purge) purge=1 ;;
    *) die "usage: $0 [--purge]" ;;
esac

[[ -d "$RUN_DIR" ]] && take_lock
kafka_adopt || true
mariadb_adopt || true
# Kafka first: it is the one clients (and our app) are most likely still talking to.
stop_pid Kafka "$KAFKA_PID" "$KAFKA_MARKER"
stop_pid MariaDB "$MARIADB_PID" "$MARIADB_MARKER"

if ((purge)); then
    if [[ ! -d "$STACK_DIR" ]]; then
        info "nothing to purge: $STACK_DIR does not exist."
    elif [[ -f "$STACK_DIR/.local-stack" ]]; then
        rm -rf -- "$STACK_DIR"
        info "deleted $STACK_DIR"
    else
        # Safety net in case STACK_DIR points somewhere up.sh never created.
        die "$STACK_DIR has no .local-stack marker; refusing to delete it."
    fi
fi
