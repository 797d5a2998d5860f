#!/usr/bin/env bash
# Every imgate-bench scenario against imgate, mosquitto and nats-server, plus the push bench.
#   bench/scripts/run_all.sh           full counts (~20 min on 2 cores)
#   bench/scripts/run_all.sh --smoke   tiny counts (seconds)
# Results: bench/results/<scenario>-<unix time>.{json,png}, push: bench/results/push-<t>.json.
# Every server runs as a child of imgate-bench under `timeout`; on exit this script also kills
# whatever it started that is still running (its own process tree only).
set -euo pipefail
MODE=()
PUSH_N=20000
if [[ "${1:-}" == "--smoke" ]]; then MODE=(--smoke); PUSH_N=500; fi
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/targets/bench}"
OUT="$ROOT/bench/results"
mkdir -p "$OUT"

kill_tree() { # kill a process and its descendants, children first
  local pid=$1 child
  for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do kill_tree "$child"; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  for child in $(cat /proc/$$/task/*/children 2>/dev/null); do kill_tree "$child"; done
}
trap cleanup EXIT INT TERM

if [[ -z "${IMGATE_BENCH_NO_INSTALL:-}" ]] && { ! command -v mosquitto >/dev/null && [[ ! -x /usr/sbin/mosquitto ]] || [[ ! -x /usr/sbin/nats-server ]] && ! command -v nats-server >/dev/null; }; then
  echo "installing peers (mosquitto, nats-server)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto nats-server) \
    || echo "could not install the peers: their rows will be skipped"
fi

cargo build --release -p imgate -p imgate-bench
BENCH="$CARGO_TARGET_DIR/release/imgate-bench"
IMGATE="$CARGO_TARGET_DIR/release/imgate"

run() { timeout --kill-after=10 "$1" "$BENCH" "${MODE[@]}" --imgate-bin "$IMGATE" --out "$OUT" "${@:2}"; }
status=0
run 600 idle || status=1
run 600 routed || status=1
run 300 latency || status=1
run 400 fanout || status=1
run 300 resume --clients 10000 --pending 2 || status=1

echo "== push (imgate-push push_bench) =="
timeout --kill-after=10 300 cargo run --release -q -p imgate-push --example push_bench -- -n "$PUSH_N" --json \
  | tee "$OUT/push-$(date +%s).json" || status=1
exit $status
