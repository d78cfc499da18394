#!/usr/bin/env bash
# The whole pipeline on the local stack: the service in the background, consumers printing
# predictions and dead letters, the producer sending a few hundred events (some invalid) and the
# purchases that follow them once the service reports ready, then a tally that ends with the latency.
# Halfway through, the service is killed with SIGKILL and started again: with the default
# PROCESSING_GUARANTEE=exactly_once the tally still counts every event predicted exactly once.
# Then, under a second stream of events, a new model is trained and promoted in the registry:
# the running service swaps to it between batches, and the tally counts predictions per version.
# The loop closes meanwhile: the purchase sink writes the purchases into the offline store, whose
# changed features the service picks up, and the quality monitor labels every prediction with
# them; with a label window of seconds instead of half an hour, the demo ends by printing each
# model version's live AUC beside its training AUC.
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
#   DEMO_LABEL_WINDOW_S=5      LABEL_WINDOW_S of this run: a purchase this long after an event labels it
#   DEMO_LATE_ALLOWANCE_S=2    LABEL_LATE_ALLOWANCE_S of this run: how late a record may come and count
# Everything is written to stdout in order, so `make demo > demo.log 2>&1` keeps all of it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=.venv/bin/python
run_started_at=$(date +%s.%N)
COUNT=${DEMO_EVENTS:-300}
LOG_DIR=${DEMO_LOG_DIR:-.stack/logs}
READY_TIMEOUT_S=${DEMO_READY_TIMEOUT_S:-180}
DRAIN_TIMEOUT_S=${DEMO_DRAIN_TIMEOUT_S:-120}
KILL=${DEMO_KILL:-1}
RETRAIN=${DEMO_RETRAIN:-1}
# Seconds, not the default half hour, so that predictions are labelled while the demo runs; at
# 100 events/s over 10,000 users, a user then seldom has two events within one window.
export LABEL_WINDOW_S=${DEMO_LABEL_WINDOW_S:-5}
export LABEL_LATE_ALLOWANCE_S=${DEMO_LATE_ALLOWANCE_S:-2}
GUARANTEE=$($PY -c 'from config import load_settings; print(load_settings().processing_guarantee)') \
    || { echo "demo FAILED: the settings do not load; see the message above"; exit 1; }
mkdir -p "$LOG_DIR"
service_log="$LOG_DIR/demo-service.log"
consumer_out="$LOG_DIR/demo-consumer.out"
dead_letters_out="$LOG_DIR/demo-dead-letters.out"
producer_out="$LOG_DIR/demo-producer.out"
sink_log="$LOG_DIR/demo-purchase-sink.log"
monitor_log="$LOG_DIR/demo-quality-monitor.log"
export LOG_FORMAT=console
# The swap after the retrain shows within seconds.
export MODEL_POLL_S=${MODEL_POLL_S:-2}
# The readiness check needs the endpoint on loopback; ports of their own for the service and the
# quality monitor unless given, since other programs on this machine may hold the defaults.
export METRICS_HOST=127.0.0.1
read -r free_port other_free_port < <($PY -c 'import socket
held = [socket.socket() for _ in range(2)]
for s in held: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in held))')
export METRICS_PORT=${METRICS_PORT:-$free_port}
export QUALITY_METRICS_PORT=${QUALITY_METRICS_PORT:-$other_free_port}
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

# Stops a program with SIGTERM and shows how it ended; anything but a clean stop fails the demo.
stop_cleanly() {
    local pid=$1 log=$2 what=$3 code=0
    kill -TERM "$pid"
    wait "$pid" || code=$?
    if ((code != 0)) || ! grep -q "stopped cleanly" "$log"; then
        echo "-- last lines of $log:"
        tail -n 20 "$log"
        fail "the $what did not stop cleanly (exit code $code)"
    fi
    echo "  $what: $(grep -oE 'stopped cleanly.*' "$log" | tail -n 1)"
}

# Stops the last stream of events and adds what it sent to the tally. Its purchases not yet due are
# dropped, and no label needs them: with no events after this one, the quality monitor's watermark
# stays the allowance short of the stop, and it labels only events a window older than that, whose
# purchases were all due, and sent, before the stop.
stop_stream() {
    local pid=$1 out=$2 what=$3
    streams_ended_at=$(date +%s.%N)
    kill -TERM "$pid"
    wait "$pid" || { cat "$out"; fail "$what failed"; }
    cat "$out"
    if grep -q "dropped" "$out"; then
        echo "  (none of those events is labelled: the quality monitor's watermark stops ${LABEL_LATE_ALLOWANCE_S} s short of this" \
             "stop, and labels an event ${LABEL_WINDOW_S} s after it)"
    fi
    valid=$((valid + $(grep -oE '[0-9]+ valid,' "$out" | tail -n 1 | grep -oE '[0-9]+')))
    invalid=$((invalid + $(grep -oE '[0-9]+ invalid' "$out" | tail -n 1 | grep -oE '[0-9]+')))
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

echo "== starting the purchase sink (log: $sink_log) and the quality monitor (log: $monitor_log;"\
     "metrics: http://127.0.0.1:$QUALITY_METRICS_PORT/metrics)"
$PY -m offline_store.purchase_sink >"$sink_log" 2>&1 &
sink_pid=$!
pids+=("$sink_pid")
# A snapshot every second, so the figures at the end come soon after the last label.
$PY quality_monitor.py --snapshot-interval-s 1 >"$monitor_log" 2>&1 &
monitor_pid=$!
pids+=("$monitor_pid")

echo "== waiting until the service reports ready (model loaded, group joined, MySQL reachable)"
$PY -m tools.wait_ready "http://127.0.0.1:$METRICS_PORT/readyz" --pid "$service_pid" --timeout-s "$READY_TIMEOUT_S" 2>&1 \
    || fail "the service did not become ready"
wait_for_line "waiting for" "$consumer_out" "$consumer_pid" "the consumer"
wait_for_line "waiting for" "$dead_letters_out" "$dead_letters_pid" "the dead-letter consumer"
wait_for_line "writing purchases from" "$sink_log" "$sink_pid" "the purchase sink"
wait_for_line "snapshots to" "$monitor_log" "$monitor_pid" "the quality monitor"

echo "== producing $COUNT events, about 5% of them invalid, and the purchases that follow them within ${LABEL_WINDOW_S} s ($GUARANTEE)"
$PY producer.py --count "$COUNT" --rate 100 --invalid-ratio 0.05 --outcomes >"$producer_out" 2>&1 &
producer_pid=$!
pids+=("$producer_pid")
if [[ "$KILL" == 1 ]]; then
    # It reads the users' features before its first event, then sends 100 a second.
    wait_for_line "read the features of" "$producer_out" "$producer_pid" "the producer"
    sleep "$((COUNT / 2))e-2"  # about half of them sent
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
    $PY producer.py --count 100000 --rate 100 --invalid-ratio 0.05 --outcomes >"$producer2_out" 2>&1 &
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
    # A few seconds of predictions by the new version, and as long again as the quality monitor
    # trails event time (window and allowance), so that those few seconds get labelled too.
    sleep $((5 + LABEL_WINDOW_S + LABEL_LATE_ALLOWANCE_S))
    stop_stream "$producer2_pid" "$producer2_out" "the second producer"
else
    # The monitor labels a prediction once event time, less the allowance, has passed the end of its
    # window; the stream above ended on its own, so events must go on that long for its last ones.
    # Counted from when the producer has read the store, just before its first event.
    producer2_out="$LOG_DIR/demo-producer-2.out"
    trickle_s=$((LABEL_WINDOW_S + LABEL_LATE_ALLOWANCE_S + 3))
    echo "== a trickle of events for ${trickle_s} s, so that the quality monitor can label the last ones"
    $PY producer.py --count 100000 --rate 10 --outcomes >"$producer2_out" 2>&1 &
    producer2_pid=$!
    pids+=("$producer2_pid")
    wait_for_line "read the features of" "$producer2_out" "$producer2_pid" "the trickle's producer"
    sleep "$trickle_s"
    stop_stream "$producer2_pid" "$producer2_out" "the trickle's producer"
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

echo "== waiting for the quality monitor to label every prediction it can"
version_args=()
for version in $(grep -E '^user ' "$consumer_out" | grep -oE 'model [^ )]+' | awk '!seen[$2]++ { print $2 }'); do
    version_args+=(--version "$version")
done
quality=$($PY -m tools.live_quality --run-started-at "$run_started_at" --streams-ended-at "$streams_ended_at" \
    --timeout-s "$DRAIN_TIMEOUT_S" "${version_args[@]}" 2>&1) \
    || { echo "$quality"; echo "-- last lines of $monitor_log:"; tail -n 20 "$monitor_log"
         fail "the quality monitor did not label the predictions"; }

echo "== stopping the purchase sink and the quality monitor"
stop_cleanly "$sink_pid" "$sink_log" "purchase sink"
stop_cleanly "$monitor_pid" "$monitor_log" "quality monitor"

echo "== live quality, the predictions labelled with the purchases that followed them (training AUC: on held-out events)"
sed 's/^/  /' <<<"$quality"

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
