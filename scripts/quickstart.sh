#!/usr/bin/env bash
# The README's first command: on a machine with only Rust, installs the build dependencies
# (scripts/deps.sh), builds Kelp into the same target directory the test command uses (so
# RocksDB's C++ is compiled once for both), starts `kelp server` (data under ./data), writes a
# blob and reads it back, and keeps the server running in the foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kelp-target}"
bash scripts/deps.sh
cargo build --workspace --bins --locked
K="$CARGO_TARGET_DIR/debug/kelp"

"$K" server --dir data &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT INT TERM
for _ in $(seq 100); do
  curl -fsS localhost:17777/readyz >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { echo "kelp server exited" >&2; exit 1; }
  sleep 0.2
done
fid=$(echo 'hello, kelp' | "$K" upload -)
echo "wrote blob $fid; reading it back:"
"$K" download "$fid"
cat <<MSG

Kelp is running (master :9333, volume :8080, filer :8888, broker :17777, Kafka :9092,
schema registry :8081; data under ./data). The CLI is $K. Ctrl-C stops it.
MSG
wait $server
