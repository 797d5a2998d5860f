#!/bin/sh
# Re-trains codec/dict/im-v1.dict from synthetic IM traffic and prints its ratios.
#
# 1. gen_samples writes 20 000 protobuf Frame bodies (seed 1), one file each.
# 2. zstd --train (fastCover) picks the most useful substrings. Its output is a zstd
#    dictionary: a header with entropy tables, then raw content with the most valuable
#    segments last. LZ4 only wants the content, so we train a little larger than needed
#    and keep the last $SIZE bytes: the end, nearest the data, is what LZ4 matches best.
# 3. dict_ratio measures it on held-out traffic (seed 2).
#
# Usage: codec/dict/train.sh [size in bytes, default 16384]. Needs zstd (apt-get install zstd).
set -eu
SIZE=${1:-16384}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${CARGO_TARGET_DIR:-$ROOT/target}/dict
rm -rf "$WORK/train"
mkdir -p "$WORK"
cd "$ROOT"
cargo run --quiet --release -p imgate-codec --example gen_samples -- "$WORK/train" 20000 1
zstd -q -f --train -r "$WORK/train" --maxdict=$((SIZE + 4096)) -o "$WORK/im-v1.zdict"
tail -c "$SIZE" "$WORK/im-v1.zdict" > codec/dict/im-v1.dict
cargo run --quiet --release -p imgate-codec --example dict_ratio
