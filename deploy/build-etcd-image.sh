#!/usr/bin/env bash
# Builds the etcd image of the highly available deployments (default tag kelp-etcd:dev) offline,
# when it is missing: the base image (kelp-base:bookworm) via build-base-image.sh when that is
# missing, then deploy/Dockerfile.etcd with a context holding only bin/etcd, the host's etcd
# binary (Debian's etcd-server; it links only the C library, which the bookworm base has).
#
#   deploy/build-etcd-image.sh [TAG]
# env: KELP_ETCD_IMAGE (default kelp-etcd:dev), KELP_BASE_IMAGE (default kelp-base:bookworm),
#      ETCD_BIN (default: etcd on PATH, else /usr/bin/etcd), FORCE=1 (rebuild even if present).
set -euo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TAG="${1:-${KELP_ETCD_IMAGE:-kelp-etcd:dev}}"
BASE="${KELP_BASE_IMAGE:-kelp-base:bookworm}"
ETCD="${ETCD_BIN:-$(command -v etcd || echo /usr/bin/etcd)}"

if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "etcd image $TAG already present ($(docker run --rm --entrypoint etcd "$TAG" --version 2>/dev/null | head -n1))"
    exit 0
fi
if [[ ! -x "$ETCD" ]]; then
    echo "error: no etcd binary at $ETCD: apt-get install etcd-server (scripts/deps.sh --test)," \
         "or point ETCD_BIN at one" >&2
    exit 1
fi

"$DEPLOY_DIR/build-base-image.sh" "$BASE"

CTX="$(mktemp -d "${TMPDIR:-/tmp}/kelp-etcd-ctx.XXXXXX")"
trap 'rm -rf "$CTX"' EXIT
mkdir -p "$CTX/bin"
cp "$ETCD" "$CTX/bin/etcd"

echo "building $TAG from $ETCD ($("$ETCD" --version | head -n1)) over $BASE"
DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" docker build -q \
    -f "$DEPLOY_DIR/Dockerfile.etcd" \
    --build-arg "BASE_IMAGE=$BASE" \
    -t "$TAG" "$CTX" >/dev/null
docker image inspect "$TAG" --format "etcd image {{.RepoTags}} {{.Size}} bytes, user {{.Config.User}}"
