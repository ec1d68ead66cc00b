#!/usr/bin/env bash
# The whole test suite: formatting, lints, every unit/router/crate test, the end-to-end suite
# that runs the real binaries as processes, the API fuzzer driven by each service's OpenAPI
# document, the Kubernetes manifests' validation and the compose deployment test (skipped,
# saying so, only where no Docker engine answers). This is the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The e2e suite starts the real binaries: build them first (same profile as the tests).
cargo build --workspace --bins --locked
cargo nextest run --workspace --locked --no-fail-fast
bash scripts/api-fuzz.sh
bash deploy/test-k8s.sh
bash deploy/test-compose.sh
