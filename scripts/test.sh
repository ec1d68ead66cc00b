#!/usr/bin/env bash
# The whole test suite: formatting, lints, the API docs (warnings denied), the API fuzzer driven by each service's OpenAPI
# document (real processes), the Kubernetes manifests' validation, the compose deployment test
# (skipped, saying so, only where no Docker engine answers), and every unit/router/crate test
# plus the end-to-end suite that runs the real binaries as processes. This is the README's test
# command.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
# docs/ARCHITECTURE.md lists every source file with its module doc: the map matches the tree.
python3 scripts/architecture.py --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Every public item documented (each crate denies missing_docs), and the docs build cleanly.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
# The e2e suite, the fuzzer and the image start the real binaries: build them first (same
# profile as the tests).
cargo build --workspace --bins --locked
bash scripts/api-fuzz.sh
bash deploy/test-k8s.sh
bash deploy/test-compose.sh
bash deploy/test-compose-ha.sh
cargo nextest run --workspace --locked --no-fail-fast
