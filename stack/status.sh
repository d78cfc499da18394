#!/usr/bin/env bash
# Print whether the local Kafka and MariaDB (from stack/up.sh) are up.
# Exit status: 0 if both are up, 1 otherwise (handy in scripts: `stack/status.sh >/dev/null`).
set -euo pipefail
# shellcheck source=stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

rc=0
kafka_adopt || true
mariadb_adopt || true
report() { # NAME PIDFILE MARKER PORT
    if pid_is_ours "$2" "$3" && port_open "$4"; then
        info "$1: up (pid $(read_pid "$2"), 127.0.0.1:$4)"
    elif pid_is_ours "$2" "$3"; then
        info "$1: starting or unhealthy (pid $(read_pid "$2"), port $4 not answering)"; rc=1
    else
        info "$1: down$(port_open "$4" && echo " (but port $4 is used by another process)")"; rc=1
    fi
}
report "Kafka $KAFKA_VERSION" "$KAFKA_PID" "$KAFKA_MARKER" "$KAFKA_PORT"
report MariaDB "$MARIADB_PID" "$MARIADB_MARKER" "$MYSQL_PORT"
# The running broker's own configuration says whether it has the secured listener.
if grep -q '^listeners=.*SASL_SSL://' "$KAFKA_MARKER" 2>/dev/null && pid_is_ours "$KAFKA_PID" "$KAFKA_MARKER"; then
    info "Kafka SASL_SSL: $(sed -n 's/^listeners=.*SASL_SSL:\/\/\([^,]*\).*/\1/p' "$KAFKA_MARKER"); clients' settings in $SECURITY_DIR/*.env"
fi
info "state dir: $STACK_DIR"
exit "$rc"
