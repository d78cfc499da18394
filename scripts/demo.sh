#!/usr/bin/env bash
# The whole pipeline on the local stack: service in the background, a consumer printing
# predictions, the producer sending a few hundred events (some invalid), then a tally.
# Run through `make demo`, which installs, starts the stack and trains first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=.venv/bin/python
LOG_DIR=.stack/logs
COUNT=${DEMO_EVENTS:-300}
mkdir -p "$LOG_DIR"
service_log="$LOG_DIR/demo-service.log"
consumer_out="$LOG_DIR/demo-consumer.out"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

echo "== starting the prediction service (log: $service_log)"
LOG_FORMAT=console $PY prediction_service.py >"$service_log" 2>&1 &
pids+=($!)

echo "== starting the consumer"
LOG_FORMAT=console $PY consumer.py --idle-timeout-s 10 >"$consumer_out" 2>&1 &
consumer_pid=$!
pids+=("$consumer_pid")
for _ in $(seq 1 60); do
    grep -q "waiting for" "$consumer_out" 2>/dev/null && break
    kill -0 "$consumer_pid" 2>/dev/null || { cat "$consumer_out"; echo "the consumer stopped early"; exit 1; }
    sleep 0.5
done

echo "== producing $COUNT events, about 5% of them invalid"
producer_summary=$(LOG_FORMAT=console $PY producer.py --count "$COUNT" --rate 100 --invalid-ratio 0.05 | tee /dev/stderr | tail -n 1)
valid=$(grep -oE '[0-9]+ valid' <<<"$producer_summary" | grep -oE '[0-9]+')

echo "== predictions, as the consumer prints them"
tail -n +1 --pid="$consumer_pid" -f "$consumer_out"
wait "$consumer_pid" || true
received=$(grep -oE 'received [0-9]+' "$consumer_out" | grep -oE '[0-9]+' || echo 0)

echo "== why some events were rejected (the service log; the records are on the dead-letter topic)"
grep "dead-lettering" "$service_log" | tail -n 5 | sed 's/^.*dead-lettering /  /' || true

echo "== service summary"
kill -TERM "${pids[0]}"
wait "${pids[0]}" || true
grep -E "stopped cleanly|events/s" "$service_log" | tail -n 2 | sed 's/^/  /'

if [[ "$received" -ge "$valid" ]]; then
    echo "demo OK: $valid valid events sent, $received predictions received"
else
    echo "demo FAILED: $valid valid events sent but only $received predictions received (see $service_log)"
    exit 1
fi
