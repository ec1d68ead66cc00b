#!/usr/bin/env bash
# Builds the Kelp runtime image offline from binaries compiled on the host:
#   1. the base image (kelp-base:bookworm) via build-base-image.sh when it is missing,
#   2. `docker build --target runtime-from-host` over it with a context holding only bin/.
#
#   deploy/build-image.sh [TAG]
# env: KELP_IMAGE (default kelp:dev), KELP_BASE_IMAGE (default kelp-base:bookworm),
#      KELP_BIN_DIR (default <repo>/target/debug), KELP_ALLOW_MISSING_BINS=1 (development only).
set -euo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$DEPLOY_DIR/.." && pwd)"
TAG="${1:-${KELP_IMAGE:-kelp:dev}}"
BASE="${KELP_BASE_IMAGE:-kelp-base:bookworm}"
BIN_DIR="${KELP_BIN_DIR:-${CARGO_TARGET_DIR:-$REPO_DIR/target}/debug}"
BINS=(kelp-master kelp-volume kelp-filer kelp-broker kelp-registry kelp)

"$DEPLOY_DIR/build-base-image.sh" "$BASE"

CTX="$(mktemp -d "${TMPDIR:-/tmp}/kelp-image-ctx.XXXXXX")"
trap 'rm -rf "$CTX"' EXIT
mkdir -p "$CTX/bin"
for b in "${BINS[@]}"; do
    if [[ -x "$BIN_DIR/$b" ]]; then
        # Hard link when possible (same filesystem), else copy: the binaries are large.
        ln "$BIN_DIR/$b" "$CTX/bin/$b" 2>/dev/null || cp "$BIN_DIR/$b" "$CTX/bin/$b"
    elif [[ "${KELP_ALLOW_MISSING_BINS:-0}" == 1 ]]; then
        echo "warning: $BIN_DIR/$b missing, image will not contain it" >&2
    else
        echo "error: $BIN_DIR/$b missing; run: cargo build --workspace --bins" >&2
        exit 1
    fi
done

echo "building $TAG from host binaries in $BIN_DIR over $BASE"
DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" docker build -q \
    -f "$DEPLOY_DIR/Dockerfile" \
    --target runtime-from-host \
    --build-arg "BASE_IMAGE=$BASE" \
    -t "$TAG" "$CTX" >/dev/null
docker image inspect "$TAG" --format "image {{.RepoTags}} {{.Size}} bytes, user {{.Config.User}}"
