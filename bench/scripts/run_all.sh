#!/usr/bin/env bash
# Every imgate-bench scenario against imgate, mosquitto and nats-server, plus the push bench.
#   bench/scripts/run_all.sh                full counts, once (~12 min on 2 cores)
#   bench/scripts/run_all.sh --runs 2       everything twice, then the medians
#   bench/scripts/run_all.sh --smoke        tiny counts (seconds)
# Results: bench/results/<scenario>-<unix time>.{json,png}, push: bench/results/push-<t>.json,
# and bench/results/summary-<unix time>.md (+ one median plot per scenario): every figure of
# this invocation's runs, each run's value and the median.
# Every server runs as a child of imgate-bench under `timeout`; on exit this script also kills
# whatever it started that is still running (its own process tree only).
set -euo pipefail
MODE=()
PUSH_N=20000
RUNS=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) MODE=(--smoke); PUSH_N=500; shift ;;
    --runs) RUNS="${2:?--runs needs a count}"; shift 2 ;;
    *) echo "usage: $0 [--smoke] [--runs N]" >&2; exit 64 ;;
  esac
done
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
STARTED="$(mktemp)"  # results newer than this file belong to this invocation
status=0
for ((r = 1; r <= RUNS; r++)); do
  echo "== run $r of $RUNS =="
  run 600 idle || status=1
  run 600 --targets imgate idle --conns 5000 --transports tls,ws,wss,quic || status=1
  run 600 routed || status=1
  run 300 latency || status=1
  run 400 fanout || status=1
  run 300 resume --clients 10000 --pending 2 || status=1

  echo "== push (imgate-push push_bench) =="
  timeout --kill-after=10 300 cargo run --release -q -p imgate-push --example push_bench -- -n "$PUSH_N" --json \
    | tee "$OUT/push-$(date +%s).json" || status=1
  sleep 1 # distinct file names for the next run's results
done

mapfile -t RESULTS < <(find "$OUT" -maxdepth 1 -name '*.json' -newer "$STARTED" | sort)
rm -f "$STARTED"
if [[ ${#RESULTS[@]} -gt 0 ]]; then
  "$BENCH" summary --markdown "$OUT/summary-$(date +%s).md" "${RESULTS[@]}" || status=1
fi
exit $status
