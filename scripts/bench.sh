#!/usr/bin/env bash
# Runs every benchmark the issues report, against a fresh `kelp server` and, for the ceiling,
# a bare axum handler that does no I/O, in the same run. Prints everything to stdout.
# Usage: scripts/bench.sh [N_BLOBS] [N_RECORDS] [all|blob]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${CARGO_TARGET_DIR:-target}/debug"
N_BLOBS="${1:-20000}"
N_RECORDS="${2:-200000}"
ONLY="${3:-all}"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
export RUST_BACKTRACE=0 RUST_LOG=warn

ports=(19433 18180 18988 17877)
"$BIN/kelp" server --dir "$work/data" --master-port ${ports[0]} --volume-port ${ports[1]} \
  --filer-port ${ports[2]} --broker-port ${ports[3]} >"$work/server.log" 2>&1 &
"$BIN/kelp" bench bare-server --listen 127.0.0.1:18999 >"$work/bare.log" 2>&1 &
for _ in $(seq 100); do curl -sf "127.0.0.1:${ports[3]}/readyz" >/dev/null && break; sleep 0.1; done

echo "== blobs: bare axum handler (no I/O), the ceiling"
for c in 16 64; do "$BIN/kelp" bench blob --quiet --master 127.0.0.1:18999 -n "$N_BLOBS" -c $c; done
echo "== blobs: kelp server, fsync on"
for c in 16 64; do "$BIN/kelp" bench blob --quiet --master 127.0.0.1:${ports[0]} -n "$N_BLOBS" -c $c; done
echo "== blobs: kelp server, fsync off"
for c in 16 64; do "$BIN/kelp" bench blob --quiet --no-fsync --master 127.0.0.1:${ports[0]} -n "$N_BLOBS" -c $c; done
curl -s "127.0.0.1:${ports[1]}/metrics" | grep -E '^kelp_volume_(writes|fdatasyncs)_total'
[ "$ONLY" = blob ] && exit 0
echo "== filer: small files"
"$BIN/kelp" bench filer --quiet --filer 127.0.0.1:${ports[2]} -n 5000 -c 16
echo "== broker"
for size in 128 1024; do
  for acks in durable buffered; do
    for p in 1 8; do
      "$BIN/kelp" bench pub --quiet --broker 127.0.0.1:${ports[3]} -n "$N_RECORDS" -s $size -p $p -b 100 -c 16 --acks $acks
    done
  done
done
