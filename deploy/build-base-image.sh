#!/usr/bin/env bash
# Builds the offline runtime base image (default tag kelp-base:bookworm) when it is missing:
# debootstrap a minimal Debian bookworm (with curl for the HEALTHCHECK) from the Debian mirror
# apt already uses on this machine, and `docker import` it. No registry is contacted.
#
#   deploy/build-base-image.sh [TAG]        (env: KELP_BASE_IMAGE, DEBIAN_MIRROR, FORCE=1)
set -euo pipefail

TAG="${1:-${KELP_BASE_IMAGE:-kelp-base:bookworm}}"
SUITE=bookworm

if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG already present"
    exit 0
fi

# The mirror apt uses here: the first Debian (non-security) URI for bookworm in the apt sources,
# in either the one-line or the deb822 format.
find_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r "$f" ]] || continue
        awk '$1=="deb" { for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i+1)=="bookworm") print $i; break } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r "$f" ]] || continue
        # deb822: paragraphs with URIs: and Suites: lines.
        awk 'BEGIN{RS=""; FS="\n"}
             { uris=""; suites="";
               for (i=1;i<=NF;i++) {
                 if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i); uris=$i }
                 if ($i ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", $i); suites=" " $i " " }
               }
               if (suites ~ / bookworm /) { split(uris, u, " "); print u[1] } }' "$f"
    done
}
MIRROR="${DEBIAN_MIRROR:-$(find_mirror | grep -v -- '-security' | head -n1 || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "installing debootstrap"
    SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
    $SUDO apt-get install -y debootstrap >/dev/null || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y debootstrap >/dev/null; }
fi
DEBOOTSTRAP="$(command -v debootstrap || echo /usr/sbin/debootstrap)"

SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
ROOT="$(mktemp -d "${TMPDIR:-/tmp}/kelp-base.XXXXXX")"
cleanup() { $SUDO rm -rf "$ROOT" "$ROOT.log"; }
trap cleanup EXIT

echo "debootstrap $SUITE from $MIRROR into $ROOT"
$SUDO "$DEBOOTSTRAP" --variant=minbase --include=curl,ca-certificates "$SUITE" "$ROOT" "$MIRROR" \
    > "$ROOT.log" 2>&1 || { tail -n 30 "$ROOT.log"; exit 1; }
# Slim it down: package lists and caches are not needed at runtime.
$SUDO rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/doc/* \
    "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/*
echo "docker import as $TAG"
$SUDO tar -C "$ROOT" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/bin/bash"]' - "$TAG" >/dev/null
docker image inspect "$TAG" --format "base image {{.RepoTags}} {{.Size}} bytes"
