# shellcheck shell=bash
# Shared helpers for the no-Docker local stack (Kafka in KRaft mode + MariaDB).
# Sourced by up.sh / down.sh / status.sh / install_system_deps.sh; not run directly.

# ---- Paths --------------------------------------------------------------------
# Everything is computed from this file's location so the scripts work from any cwd.
STACK_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$STACK_SRC")"

# ---- Messages -----------------------------------------------------------------
info() { printf '[stack] %s\n' "$*"; }
warn() { printf '[stack] WARNING: %s\n' "$*" >&2; }
die()  { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# ---- .env ---------------------------------------------------------------------
# load_env_file FILE: set the variables FILE holds that the environment does not. config/'s
# reader (python-dotenv) parses it, so the stack sees the very values the programs see, `#`
# and `$` included. They are not exported: client tools read some of the same names (the
# mariadb client honours MYSQL_HOST), and nothing the stack starts should inherit them.
load_env_file() {
    [[ -f "$1" ]] || return 0
    local python="$REPO_ROOT/.venv/bin/python" assignments
    [[ -x "$python" ]] || die "$1 is read with the project's python-dotenv, as the programs read it, but $REPO_ROOT/.venv is missing: run make install (or move $1 aside)"
    assignments="$("$python" "$STACK_SRC/env_file.py" "$1")" || die "cannot use $1 (see above)"
    eval "$assignments"
}
load_env_file "$REPO_ROOT/.env"

# ---- State --------------------------------------------------------------------
# All mutable state (data, logs, pids, generated configs, cached classpath) lives here.
STACK_DIR="${STACK_DIR:-$REPO_ROOT/.stack}"
RUN_DIR="$STACK_DIR/run"
LOG_DIR="$STACK_DIR/logs"

# mariadbd lives in /usr/sbin, which is not on every (non-root) user's PATH.
PATH="$PATH:/usr/sbin"

# ---- Versions / ports (single place to change them) ---------------------------
# Keep in sync with the apache/kafka:<version> image used by docker-compose.
KAFKA_VERSION="${KAFKA_VERSION:-4.1.2}"
if [[ -n "${KAFKA_HOME:-}" ]]; then
    # With a distribution, its jars decide the version (used only in messages then).
    _jar="$(compgen -G "$KAFKA_HOME/libs/kafka_2.13-*.jar" | grep -v -e sources -e javadoc -e test | head -n1 || true)"
    [[ -n "$_jar" ]] && { _jar="${_jar##*/kafka_2.13-}"; KAFKA_VERSION="${_jar%.jar}"; }
    unset _jar
fi
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
# Kafka's own default heap. ZGC rather than Kafka's default G1: with G1 the broker paused 22–39 ms
# about once a second at 1,000 events/s, and those pauses set the pipeline's p99 (18–91 ms against
# 12–22 ms with ZGC on a warm broker, README "Performance"). Both names are the ones Kafka's own scripts read.
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms1g -Xmx1g}"
KAFKA_JVM_PERFORMANCE_OPTS="${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseZGC -Djava.awt.headless=true}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"

MYSQL_PORT="${MYSQL_PORT:-3306}"
MYSQL_DATABASE="${MYSQL_DATABASE:-purchases}"
MYSQL_USER="${MYSQL_USER:-prediction}"
# `-`, not `:-`: an empty password is a valid setting for config/, so it is one here too.
MYSQL_PASSWORD="${MYSQL_PASSWORD-prediction}"
MYSQL_START_TIMEOUT="${MYSQL_START_TIMEOUT:-60}"

KAFKA_PID="$RUN_DIR/kafka.pid"
KAFKA_LOG="$LOG_DIR/kafka.log"
MARIADB_PID="$RUN_DIR/mariadb.pid"
MARIADB_SOCK="$RUN_DIR/mariadb.sock"
MARIADB_LOG="$LOG_DIR/mariadb.log"
MARIADB_CNF="$STACK_DIR/mariadb/my.cnf"

# ---- Processes & ports --------------------------------------------------------
# port_open PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
# Uses bash's /dev/tcp so we need neither nc nor ss.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# read_pid PIDFILE: prints the pid if the file exists and holds a number.
read_pid() {
    [[ -f "$1" ]] || return 1
    local pid
    pid="$(tr -dc '0-9' <"$1")"
    [[ -n "$pid" ]] && printf '%s' "$pid"
}

# pid_is_ours PIDFILE MARKER: the recorded pid is alive AND its command line
# contains MARKER (a path inside $STACK_DIR). The marker check protects against
# a stale pid file whose number has been reused by an unrelated process.
pid_is_ours() {
    local pid
    pid="$(read_pid "$1")" || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# adopt_pid PIDFILE MARKER COMM: if the pid file is missing/stale but a server process
# (command name COMM, command line containing MARKER) is running, record its pid again.
# Heals a pid file lost to e.g. a concurrent down/up or a manual rm.
adopt_pid() {
    pid_is_ours "$1" "$2" && return 0
    local dir pid
    for dir in /proc/[0-9]*; do
        pid="${dir#/proc/}"
        [[ "$(cat "$dir/comm" 2>/dev/null)" == "$3" ]] || continue
        if tr '\0' ' ' <"$dir/cmdline" 2>/dev/null | grep -qF -- "$2"; then
            [[ -d "$(dirname "$1")" ]] && echo "$pid" >"$1"
            return 0
        fi
    done
    return 1
}

# take_lock: serialise up.sh/down.sh runs (parallel make targets, two shells) so they
# cannot interleave. Servers are launched with `9>&-` so they never inherit the lock.
take_lock() {
    exec 9>>"$RUN_DIR/stack.lock"
    flock -w 300 9 || die "another stack/up.sh or down.sh is still running (lock: $RUN_DIR/stack.lock)"
}

# wait_ready NAME PIDFILE MARKER TIMEOUT LOGFILE CHECK_CMD...
# Polls CHECK_CMD once a second; fails fast if the process dies meanwhile.
wait_ready() {
    local name="$1" pidfile="$2" marker="$3" timeout="$4" logfile="$5"
    shift 5
    local waited=0
    until "$@"; do
        if ! pid_is_ours "$pidfile" "$marker"; then
            tail -n 30 "$logfile" >&2 2>/dev/null || true
            die "$name exited during startup. Full log: $logfile"
        fi
        if ((waited >= timeout)); then
            tail -n 30 "$logfile" >&2 2>/dev/null || true
            die "$name not ready after ${timeout}s (still running, pid $(read_pid "$pidfile")). Full log: $logfile"
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

# ensure_port_free NAME PORT ENVVAR: refuse to start if a foreign process holds the port.
ensure_port_free() {
    port_open "$2" || return 0
    # Suggest .env rather than a one-off variable: the programs read .env too and follow the move.
    die "port $2 on 127.0.0.1 is already in use by another process, so $1 cannot start. Free it (find it with: ss -ltnp 'sport = :$2') or use another port: put $3=$(($2 + 10000)) in $REPO_ROOT/.env"
}

# stop_pid NAME PIDFILE MARKER: SIGTERM, wait up to 60s, then SIGKILL. Idempotent.
stop_pid() {
    local name="$1" pidfile="$2" marker="$3" pid i
    if ! pid_is_ours "$pidfile" "$marker"; then
        info "$name: not running."
        rm -f "$pidfile"
        return 0
    fi
    pid="$(read_pid "$pidfile")"
    info "$name: stopping (pid $pid)..."
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$name did not exit within 60s after SIGTERM; sending SIGKILL."
        kill -KILL "$pid" 2>/dev/null || true
        sleep 1
    fi
    rm -f "$pidfile"
    info "$name: stopped."
}

# Process markers: unique strings from each server's command line.
KAFKA_MARKER="$STACK_DIR/kafka/server.properties"
MARIADB_MARKER="--defaults-file=$MARIADB_CNF"

kafka_adopt()     { adopt_pid "$KAFKA_PID" "$KAFKA_MARKER" java; }
mariadb_adopt()   { adopt_pid "$MARIADB_PID" "$MARIADB_MARKER" mariadbd; }
kafka_running()   { kafka_adopt && port_open "$KAFKA_PORT"; }
mariadb_running() { mariadb_adopt && port_open "$MYSQL_PORT"; }

# new_kafka_cluster_id [RANDOM_SOURCE]: 16 random bytes as base64url without padding, Kafka's
# Uuid format. One in 64 such strings starts with `-`, which kafka-storage reads as an option;
# Kafka's own generator avoids them too. Turning that `-` into `_` flips one bit, so the id
# still stands for 16 bytes.
new_kafka_cluster_id() {
    local id
    id="$(head -c 16 "${1:-/dev/urandom}" | base64 | tr '+/' '-_' | tr -d '=')"
    [[ "$id" == -* ]] && id="_${id:1}"
    printf '%s\n' "$id"
}
