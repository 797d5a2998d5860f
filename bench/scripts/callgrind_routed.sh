#!/usr/bin/env bash
# User-space instructions per routed message in the imgate server, counted by callgrind:
# repeatable for the same binary whatever else the machine is doing, so an A/B of a hot-path
# change does not drown in the run-to-run noise of msg/s and CPU seconds on a shared box.
#
#   bench/scripts/callgrind_routed.sh [IMGATE_BIN] [SMALL] [LARGE]
#   DURABILITY=disk bench/scripts/callgrind_routed.sh   # sessions in the session store
#
# Runs `imgate-bench routed` twice against IMGATE_BIN under callgrind (default 10,000 and
# 40,000 messages, same 1,000 users and 4 senders) and prints
# (instructions(LARGE) - instructions(SMALL)) / (LARGE - SMALL): the marginal cost of one
# message (Send in, Receipt out, Deliver out, its share of an Ack), without the connects.
# Kernel work (syscalls, TCP) is not counted. The callgrind files are kept for
# `callgrind_annotate`. Needs valgrind; ~20 s per run.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/targets/bench}"
IMGATE="${1:-$CARGO_TARGET_DIR/release/imgate}"
SMALL="${2:-10000}"
LARGE="${3:-40000}"
# One durability per run (the bench's default runs both, which one wrapper cannot follow).
DURABILITY="${DURABILITY:-memory}"
BENCH="$CARGO_TARGET_DIR/release/imgate-bench"
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 69; }
[[ -x "$BENCH" ]] || (cd "$ROOT" && cargo build --release -p imgate-bench)
WORK="$(mktemp -d)"
echo "callgrind files in $WORK"

# The bench kills its server with SIGKILL, which would lose callgrind's output: the wrapper
# leaves valgrind running when it is killed, and this script stops the server with SIGTERM
# (imgate exits cleanly on it, and callgrind writes its file at exit).
cat >"$WORK/imgate" <<EOF
#!/usr/bin/env bash
valgrind --tool=callgrind --callgrind-out-file="\$CG_OUT" "$IMGATE" "\$@" </dev/null 2>>"$WORK/valgrind.log" &
echo \$! >"$WORK/pid"
wait \$!
EOF
chmod +x "$WORK/imgate"

count() { # messages -> total instructions
  export CG_OUT="$WORK/routed-$DURABILITY-$1.callgrind"
  timeout 600 "$BENCH" --targets imgate --imgate-bin "$WORK/imgate" --out "$WORK" \
    routed --durability "$DURABILITY" --messages "$1" | grep -E '^imgate' >&2
  local pid
  pid="$(cat "$WORK/pid")"
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
  awk '/^totals:/ {print $2}' "$CG_OUT"
}
small="$(count "$SMALL")"
large="$(count "$LARGE")"
echo "instructions: $SMALL messages $small, $LARGE messages $large"
echo "per message: $(( (large - small) / (LARGE - SMALL) ))"
