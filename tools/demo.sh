#!/usr/bin/env bash
# The whole pipeline on the local stack: the service in the background, consumers printing
# predictions and dead letters, the producer sending a few hundred events (some invalid) once
# the service reports ready, then a tally that ends with the latency.
# Halfway through, the service is killed with SIGKILL and started again: with the default
# PROCESSING_GUARANTEE=exactly_once the tally still counts every event predicted exactly once.
# Then, under a second stream of events, a new model is trained and promoted in the registry:
# the running service swaps to it between batches, and the tally counts predictions per version.
# Run through `make demo`, which installs, starts the stack and trains first.
#
# The programs read their settings from the environment and `.env` as always, so the demo can
# be pointed at other topics, another database or model (tests/integration/test_demo.py does).
# The demo's own knobs, none of them a setting:
#   DEMO_EVENTS=300            events to send
#   DEMO_LOG_DIR=.stack/logs   where the service log and the consumers' output go
#   DEMO_READY_TIMEOUT_S=180   how long the service and consumers may take to start
#   DEMO_DRAIN_TIMEOUT_S=120   how long predictions may take to arrive after the last event
#   DEMO_KILL=1                0 leaves the service running instead of killing it mid-stream
#   DEMO_RETRAIN=1             0 skips the retrain and promotion under load
# Everything is written to stdout in order, so `make demo > demo.log 2>&1` keeps all of it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=.venv/bin/python
COUNT=${DEMO_EVENTS:-300}
LOG_DIR=${DEMO_LOG_DIR:-.stack/logs}
READY_TIMEOUT_S=${DEMO_READY_TIMEOUT_S:-180}
DRAIN_TIMEOUT_S=${DEMO_DRAIN_TIMEOUT_S:-120}
KILL=${DEMO_KILL:-1}
RETRAIN=${DEMO_RETRAIN:-1}
GUARANTEE=$($PY -c 'from config import load_settings; print(load_settings().processing_guarantee)') \
    || { echo "demo FAILED: the settings do not load; see the message above"; exit 1; }
mkdir -p "$LOG_DIR"
service_log="$LOG_DIR/demo-service.log"
consumer_out="$LOG_DIR/demo-consumer.out"
dead_letters_out="$LOG_DIR/demo-dead-letters.out"
producer_out="$LOG_DIR/demo-producer.out"
export LOG_FORMAT=console
# The swap after the retrain shows within seconds.
export MODEL_POLL_S=${MODEL_POLL_S:-2}
# The readiness check needs the endpoint on loopback; a port of its own unless one is given,
# since another instance on this machine may hold the default.
export METRICS_HOST=127.0.0.1
export METRICS_PORT=${METRICS_PORT:-$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
if [[ "$METRICS_PORT" == 0 ]]; then
    echo "demo FAILED: the demo waits on the service's /readyz, so METRICS_PORT must not be 0"
    exit 1
fi

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

fail() {
    echo "demo FAILED: $1"
    [[ -f "$service_log" ]] && { echo "-- last lines of $service_log:"; tail -n 20 "$service_log"; }
    exit 1
}

# Waits for a line in a program's output; gives up if the program exits or the time is up.
wait_for_line() {
    local pattern=$1 file=$2 pid=$3 what=$4 deadline=$((SECONDS + READY_TIMEOUT_S))
    until grep -q "$pattern" "$file" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$file"; fail "$what stopped early"; }
        ((SECONDS < deadline)) || fail "$what did not start within ${READY_TIMEOUT_S} s"
        sleep 0.2
    done
}

echo "== starting the prediction service (log: $service_log; metrics: http://127.0.0.1:$METRICS_PORT/metrics)"
$PY prediction_service.py >"$service_log" 2>&1 &
service_pid=$!
pids+=("$service_pid")

echo "== starting the consumers (predictions: $consumer_out, dead letters: $dead_letters_out)"
# No idle timeout: however slowly the machine starts the service, the consumer waits for the
# first prediction; the demo itself stops it once every prediction is in.
$PY consumer.py >"$consumer_out" 2>&1 &
consumer_pid=$!
pids+=("$consumer_pid")
$PY consumer.py --dead-letters >"$dead_letters_out" 2>&1 &
dead_letters_pid=$!
pids+=("$dead_letters_pid")

echo "== waiting until the service reports ready (model loaded, group joined, MySQL reachable)"
$PY -m tools.wait_ready "http://127.0.0.1:$METRICS_PORT/readyz" --pid "$service_pid" --timeout-s "$READY_TIMEOUT_S" 2>&1 \
    || fail "the service did not become ready"
wait_for_line "waiting for" "$consumer_out" "$consumer_pid" "the consumer"
wait_for_line "waiting for" "$dead_letters_out" "$dead_letters_pid" "the dead-letter consumer"

echo "== producing $COUNT events, about 5% of them invalid ($GUARANTEE)"
$PY producer.py --count "$COUNT" --rate 100 --invalid-ratio 0.05 >"$producer_out" 2>&1 &
producer_pid=$!
pids+=("$producer_pid")
if [[ "$KILL" == 1 ]]; then
    sleep $((COUNT / 200 + 1))  # about half of them sent
    echo "== kill -9 of the service mid-stream, then a new one: it takes over once the group drops the dead member (~10 s)"
    kill -KILL "$service_pid"
    wait "$service_pid" 2>/dev/null || true
    $PY prediction_service.py >>"$service_log" 2>&1 &
    service_pid=$!
    pids+=("$service_pid")
fi
wait "$producer_pid" || { cat "$producer_out"; fail "the producer failed"; }
cat "$producer_out"
valid=$(grep -oE '[0-9]+ valid,' "$producer_out" | tail -n 1 | grep -oE '[0-9]+')
invalid=$(grep -oE '[0-9]+ invalid' "$producer_out" | tail -n 1 | grep -oE '[0-9]+')

if [[ "$RETRAIN" == 1 ]]; then
    retrain_out="$LOG_DIR/demo-retrain.out"
    producer2_out="$LOG_DIR/demo-producer-2.out"
    echo "== retraining and promoting a new model while events keep coming (log: $retrain_out)"
    swaps_before=$(grep -c "serving model is now" "$service_log" || true)
    $PY producer.py --count 100000 --rate 100 --invalid-ratio 0.05 >"$producer2_out" 2>&1 &
    producer2_pid=$!
    pids+=("$producer2_pid")
    $PY -m model.train --promote --samples 30000 >"$retrain_out" 2>&1 || { cat "$retrain_out"; fail "the retrain failed"; }
    grep -E "accepted|registered" "$retrain_out" | tail -n 1 | sed 's/^/  /'
    deadline=$((SECONDS + READY_TIMEOUT_S))
    until (($(grep -c "serving model is now" "$service_log" || true) > swaps_before)); do
        ((SECONDS < deadline)) || fail "the service did not swap to the new model within ${READY_TIMEOUT_S} s"
        sleep 0.2
    done
    grep "serving model is now" "$service_log" | tail -n 1 | sed 's/^/  /'
    sleep 3  # a few seconds of predictions by the new version
    kill -TERM "$producer2_pid"
    wait "$producer2_pid" || { cat "$producer2_out"; fail "the second producer failed"; }
    cat "$producer2_out"
    valid=$((valid + $(grep -oE '[0-9]+ valid,' "$producer2_out" | tail -n 1 | grep -oE '[0-9]+')))
    invalid=$((invalid + $(grep -oE '[0-9]+ invalid' "$producer2_out" | tail -n 1 | grep -oE '[0-9]+')))
fi

echo "== predictions, as the consumer prints them"
deadline=$((SECONDS + DRAIN_TIMEOUT_S))
while (($(grep -c '^user ' "$consumer_out" || true) < valid)) && ((SECONDS < deadline)); do
    kill -0 "$consumer_pid" 2>/dev/null || break
    sleep 0.2
done
while (($(grep -c ']@' "$dead_letters_out" || true) < invalid)) && ((SECONDS < deadline)); do
    kill -0 "$dead_letters_pid" 2>/dev/null || break
    sleep 0.2
done
# Stopped by signal, each consumer prints its summary line and exits.
kill -TERM "$consumer_pid" "$dead_letters_pid" 2>/dev/null || true
wait "$consumer_pid" "$dead_letters_pid" || true
cat "$consumer_out"
consumer_summary=$(grep -E '^received [0-9]+ records' "$consumer_out" | tail -n 1 || true)
received=$(grep -oE '^received [0-9]+' <<<"$consumer_summary" | grep -oE '[0-9]+' || echo 0)
twice=$(grep -E '^user ' "$consumer_out" | grep -oE ' event [^ ]+' | sort | uniq -d | wc -l)
latency=$(grep -oE 'latency after the event .*ms' <<<"$consumer_summary" || echo "latency: no prediction arrived")

echo "== predictions per model version"
grep -E '^user ' "$consumer_out" | grep -oE 'model [^ )]+' | sort | uniq -c | sed 's/^ */  /' || true

echo "== why some events were rejected (the first five dead letters)"
grep ']@' "$dead_letters_out" | head -n 5 | sed 's/^/  /' || true

echo "== service summary"
kill -TERM "$service_pid"
wait "$service_pid" || true
grep -E "stopped cleanly|events/s" "$service_log" | tail -n 2 | sed 's/^/  /' || true

crash=""
[[ "$KILL" == 1 ]] && crash=", the service killed with SIGKILL mid-stream and restarted"
[[ "$RETRAIN" == 1 ]] && crash="$crash, a new model promoted under load"
tally="$valid valid events sent, $received predictions received, $twice events predicted twice ($GUARANTEE$crash)"
if [[ "$received" -lt "$valid" ]]; then
    fail "$tally; $latency"
elif [[ "$GUARANTEE" == exactly_once && "$twice" -gt 0 ]]; then
    fail "$tally; $latency"
fi
echo "demo OK: $tally; $latency"
