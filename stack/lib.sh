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

# ---- Settings -----------------------------------------------------------------
# Defaults for what .env or the environment leave unset. Nothing below uses them before
# check_stack_values has approved every one.
STACK_DIR="${STACK_DIR:-$REPO_ROOT/.stack}"
# Keep in sync with the apache/kafka:<version> image used by docker-compose.
KAFKA_VERSION="${KAFKA_VERSION:-4.1.2}"
KAFKA_HOME="${KAFKA_HOME:-}"
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
# `-`, not `:-`: an empty password is a valid setting for config/, so it is one here too. With
# MYSQL_PASSWORD_FILE set, check_stack_values reads the password from that file instead.
[[ -n "${MYSQL_PASSWORD_FILE:-}" ]] || MYSQL_PASSWORD="${MYSQL_PASSWORD-prediction}"
MYSQL_START_TIMEOUT="${MYSQL_START_TIMEOUT:-60}"

# on: Kafka also gets a SASL_SSL listener with users and ACLs, MariaDB TLS and two
# least-privilege users (stack/security.sh, stack/security/README.md).
STACK_SECURITY="${STACK_SECURITY:-off}"
KAFKA_SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-9094}"
# The least-privilege MariaDB users it adds: one reads the features, one loads the store.
MYSQL_SERVICE_USER=prediction_service
MYSQL_LOADER_USER=prediction_loader
# The pipeline's names, for the ACLs of the secured stack. Defaults as in config/settings.py.
INPUT_TOPIC="${INPUT_TOPIC:-input_topic}"
OUTPUT_TOPIC="${OUTPUT_TOPIC:-output_topic}"
DLQ_TOPIC="${DLQ_TOPIC:-dead_letter_topic}"
SHADOW_OUTPUT_TOPIC="${SHADOW_OUTPUT_TOPIC:-}"
KAFKA_GROUP_ID="${KAFKA_GROUP_ID:-prediction-service}"
# The closed loop's: purchases, the purchase sink's group, the quality monitor's snapshots.
PURCHASES_TOPIC="${PURCHASES_TOPIC:-purchases}"
PURCHASES_GROUP_ID="${PURCHASES_GROUP_ID:-purchase-sink}"
QUALITY_TOPIC="${QUALITY_TOPIC:-prediction_quality}"

# ---- Checking the settings ------------------------------------------------------
# The values above end up in server.properties, my.cnf, SQL, shell arithmetic and java's
# command line; each is held to what all of its places can carry, and the scripts stop
# before they create or start anything otherwise.

# shown VALUE: the value quoted as the shell would, so a newline or `;` is visible.
shown() { printf '%s' "${1@Q}"; }
refuse() { die "$1 $2. Fix it in $REPO_ROOT/.env or the environment."; }

check_port() { # NAME
    local value="${!1}"
    [[ "$value" =~ ^[1-9][0-9]{0,4}$ ]] && ((10#$value <= 65535)) \
        || refuse "$1=$(shown "$value")" "is not a port: it must be a whole number from 1 to 65535"
}

check_seconds() { # NAME
    [[ "${!1}" =~ ^[1-9][0-9]{0,5}$ ]] \
        || refuse "$1=$(shown "${!1}")" "must be a whole number of seconds from 1 to 999999"
}

check_name() { # NAME: database, user, version, topic and group names, used in SQL, file names and tool arguments
    [[ "${!1}" =~ ^[A-Za-z0-9._-]+$ ]] \
        || refuse "$1=$(shown "${!1}")" "may hold only letters, digits, '.', '_' and '-'"
}

check_path() { # NAME [written]: a path on one line; `written` ones go into my.cnf and server.properties
    local value="${!1}"
    [[ "$value" =~ [[:cntrl:]] ]] && refuse "$1=$(shown "$value")" "holds a newline or another control character"
    if [[ "${2:-}" == written && "$value" =~ [\\\"\'#] ]]; then
        refuse "$1=$(shown "$value")" "holds one of \\ \" ' #, which the generated my.cnf and server.properties cannot carry: choose another directory"
    fi
    return 0
}

check_jvm_options() { # NAME: split into java's arguments at spaces, never run by a shell
    local value="${!1}" unsafe='[[:cntrl:];`$|&<>]'
    [[ "$value" =~ $unsafe ]] \
        && refuse "$1=$(shown "$value")" "holds a newline, ; \` \$ | & < or >: it may hold only JVM options separated by spaces"
    return 0
}

check_password() { # NAME: never shown, it is a secret
    [[ "${!1}" =~ [[:cntrl:]] ]] \
        && refuse "$1" "holds a newline or another control character: choose a password of printable characters"
    return 0
}

# read_password_file NAME: NAME_FILE's content as NAME, as config/secrets.py reads it: the path
# relative to the project, one trailing line end dropped; both set is an error, as there.
read_password_file() {
    local file_variable="${1}_FILE" path value=""
    [[ -n "${!file_variable:-}" ]] || return 0
    [[ -z "${!1+set}" ]] || die "$file_variable and $1 are both set; set only one of them"
    check_path "$file_variable"
    path="${!file_variable}"
    [[ "$path" == /* ]] || path="$REPO_ROOT/$path"
    [[ -f "$path" && -r "$path" ]] || die "$file_variable: cannot read $path"
    IFS= read -r -d '' value <"$path" || true
    value="${value%$'\n'}"
    printf -v "$1" '%s' "${value%$'\r'}"
}
check_switch() { # NAME: on/off, spelled as config/ spells booleans
    case "${!1,,}" in
        on | true | yes | 1) printf -v "$1" on ;;
        off | false | no | 0 | "") printf -v "$1" off ;;
        *) refuse "$1=$(shown "${!1}")" "must be on or off" ;;
    esac
}

check_distinct_ports() { # NAME...: two servers cannot listen on one port
    local -A owner=()
    local name
    for name in "$@"; do
        [[ -n "${owner[${!name}]:-}" ]] && refuse "$name=${!name}" "is also ${owner[${!name}]}: each server needs its own port"
        owner[${!name}]="$name"
    done
    return 0
}

check_stack_values() {
    check_path STACK_DIR written
    check_path KAFKA_HOME
    check_name KAFKA_VERSION
    check_port KAFKA_PORT
    check_port KAFKA_CONTROLLER_PORT
    check_port MYSQL_PORT
    check_port KAFKA_SASL_SSL_PORT
    check_seconds KAFKA_START_TIMEOUT
    check_seconds MYSQL_START_TIMEOUT
    check_jvm_options KAFKA_HEAP_OPTS
    check_jvm_options KAFKA_JVM_PERFORMANCE_OPTS
    check_name MYSQL_DATABASE
    check_name MYSQL_USER
    # The stack logs in as root through the socket and owns the server's own accounts.
    case "${MYSQL_USER,,}" in
        root | mysql | mariadb.sys | public) refuse "MYSQL_USER=$MYSQL_USER" "is one of the server's own accounts: choose another name" ;;
    esac
    read_password_file MYSQL_PASSWORD
    check_password MYSQL_PASSWORD
    check_switch STACK_SECURITY
    if [[ "$STACK_SECURITY" == on ]]; then
        check_distinct_ports KAFKA_PORT KAFKA_CONTROLLER_PORT MYSQL_PORT KAFKA_SASL_SSL_PORT
        case "$MYSQL_USER" in
            "$MYSQL_SERVICE_USER" | "$MYSQL_LOADER_USER") refuse "MYSQL_USER=$MYSQL_USER" "is a user STACK_SECURITY=on creates with fewer rights: choose another name" ;;
        esac
        check_name INPUT_TOPIC
        check_name OUTPUT_TOPIC
        check_name DLQ_TOPIC
        check_name KAFKA_GROUP_ID
        [[ -z "$SHADOW_OUTPUT_TOPIC" ]] || check_name SHADOW_OUTPUT_TOPIC
        check_name PURCHASES_TOPIC
        check_name PURCHASES_GROUP_ID
        check_name QUALITY_TOPIC
    else
        check_distinct_ports KAFKA_PORT KAFKA_CONTROLLER_PORT MYSQL_PORT
    fi
}
check_stack_values

if [[ -n "$KAFKA_HOME" ]]; then
    # With a distribution, its jars decide the version (used only in messages then).
    _jar="$(compgen -G "$KAFKA_HOME/libs/kafka_2.13-*.jar" | grep -v -e sources -e javadoc -e test | head -n1 || true)"
    [[ -n "$_jar" ]] && { _jar="${_jar##*/kafka_2.13-}"; KAFKA_VERSION="${_jar%.jar}"; }
    unset _jar
    check_name KAFKA_VERSION
fi

# ---- State --------------------------------------------------------------------
# All mutable state (data, logs, pids, generated configs, cached classpath) lives here.
RUN_DIR="$STACK_DIR/run"
LOG_DIR="$STACK_DIR/logs"
# Certificates, passwords and the clients' env files of the secured stack.
SECURITY_DIR="$STACK_DIR/security"

# mariadbd lives in /usr/sbin, which is not on every (non-root) user's PATH.
PATH="$PATH:/usr/sbin"

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
    # The port is an argument of the inner shell, never part of its code.
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' port_open "$1" 2>/dev/null
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
    local other=$((10#$2 + 10000))
    ((other <= 65535)) || other=$((10#$2 - 10000))
    # Suggest .env rather than a one-off variable: the programs read .env too and follow the move.
    die "port $2 on 127.0.0.1 is already in use by another process, so $1 cannot start. Free it (find it with: ss -ltnp 'sport = :$2') or use another port: put $3=$other in $REPO_ROOT/.env"
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

# SQL literals for the default sql_mode, where a backslash escapes. Values reach MariaDB only
# through these, and only as text on the client's standard input (up.sh's run_sql).
sql_str() { local s="${1//\\/\\\\}"; printf "'%s'" "${s//\'/\'\'}"; }
sql_ident() { printf '`%s`' "${1//\`/\`\`}"; }

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
