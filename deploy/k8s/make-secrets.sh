#!/usr/bin/env bash
# Generates the TLS files and credentials the kustomize base turns into Secrets (its
# secretGenerator reads them from deploy/k8s/base/secrets/, which git ignores). Run it once
# before `kubectl apply -k` / `kubectl kustomize`:
#
#   deploy/k8s/make-secrets.sh [--out DIR] [--namespace NS]... [--volumes N] [--ha [--masters N] [--brokers N]] [--force]
#
# It runs `kelp cert --out DIR --host NAME...`, which writes a development CA (ca.pem), one
# certificate for every service (cert.pem, key.pem: server and client auth), the fid-token
# HMAC keys (jwt-signing.key; jwt-read.key, unused here), the cluster token (cluster.token) and
# client API keys (api-keys for the services, write.api-key and read.api-key for clients). The
# CA's private key (ca-key.pem) is deleted afterwards: nothing in the cluster needs it, and
# without it no further certificate can be signed by this CA.
#
# The certificate names every in-cluster name the services reach each other by, for each
# namespace the manifests may be applied to (the volume servers advertise a namespaced name):
#   kelp-master, kelp-filer, kelp-broker, kelp-volume           (KELP_MASTER, KELP_FILER, the
#       broker's Kafka advertised host; resolved through the pod's namespace search path)
#   <service>.<ns>, <service>.<ns>.svc, <service>.<ns>.svc.cluster.local
#   kelp-volume-<i>.kelp-volume.<ns>.svc for i < N               (each volume pod's
#       KELP_PUBLIC_URL, the url the master hands out; a wildcard is not supported)
#   kelp-volume-<i>.kelp-volume
# With --ha (the highly available overlay, deploy/k8s/overlays/ha), also:
#   kelp-master-<i>.kelp-master, kelp-master-<i>.kelp-master.<ns>.svc for i < --masters
#       (KELP_MASTER lists the master pods; each advertises its own name, KELP_ADVERTISE)
#   kelp-broker-<i>.kelp-broker-headless, kelp-broker-<i>.kelp-broker-headless.<ns>.svc for
#       i < --brokers (the brokers share the partitions: each advertises its own name, to which
#       the others redirect HTTP clients, and its Kafka listener advertises it too)
#   kelp-etcd, kelp-etcd.<ns>, kelp-etcd.<ns>.svc, kelp-etcd.<ns>.svc.cluster.local
#   kelp-etcd-<i>.kelp-etcd, kelp-etcd-<i>.kelp-etcd.<ns>.svc for i < 3   (KELP_ETCD_ENDPOINTS,
#       each member's client and peer URLs: etcd serves TLS with this certificate too)
# Scaling kelp-volume past N replicas, or deploying to another namespace, needs a new
# certificate: rerun with the new --volumes / --namespace and --force.
#
# Idempotent: when DIR already holds every file, made for the same names (recorded in
# DIR/hosts), it does nothing. --force regenerates EVERYTHING (new CA, keys and tokens: a
# running cluster must be restarted with the new Secrets, and clients given the new keys).
#
# The kelp binary: $KELP_BIN, else $KELP_BIN_DIR/kelp, else ${CARGO_TARGET_DIR:-target}/debug/kelp
# (relative to the repository root), else `kelp` on PATH. Build it with
# `cargo build --workspace --bins`.
#
# Options:
#   --out DIR        where to write (default deploy/k8s/base/secrets)
#   --namespace NS   a namespace the manifests are applied to (repeatable; default: default and
#                    kelp-dev, the base's and the dev overlay's)
#   --volumes N      volume server replicas the certificate covers (default 8)
#   --ha             also the names of the HA overlay (master and broker pods, etcd); without --namespace
#                    the namespaces are then default, kelp-dev and kelp-ha
#   --masters N      master replicas the certificate covers with --ha (default 2)
#   --brokers N      broker replicas the certificate covers with --ha (default 2)
#   --force          regenerate everything even if present
set -euo pipefail

K8S_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$K8S_DIR/../.." && pwd)"

OUT="$K8S_DIR/base/secrets"
NAMESPACES=()
VOLUMES=8
HA=0
MASTERS=2
BROKERS=2
ETCD_MEMBERS=3
FORCE=0
usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit "${1:-2}"
}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
        --namespace) NAMESPACES+=("${2:?--namespace needs a name}"); shift 2 ;;
        --volumes) VOLUMES="${2:?--volumes needs a number}"; shift 2 ;;
        --ha) HA=1; shift ;;
        --masters) MASTERS="${2:?--masters needs a number}"; shift 2 ;;
        --brokers) BROKERS="${2:?--brokers needs a number}"; shift 2 ;;
        --force) FORCE=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "make-secrets: unknown argument $1" >&2; usage ;;
    esac
done
if [[ ${#NAMESPACES[@]} == 0 ]]; then
    NAMESPACES=(default kelp-dev)
    [[ $HA == 0 ]] || NAMESPACES+=(kelp-ha)
fi
if [[ ! $VOLUMES =~ ^[0-9]+$ || $VOLUMES -lt 1 ]]; then
    echo "make-secrets: --volumes must be a positive number" >&2
    exit 2
fi
if [[ ! $MASTERS =~ ^[0-9]+$ || $MASTERS -lt 1 ]]; then
    echo "make-secrets: --masters must be a positive number" >&2
    exit 2
fi
if [[ ! $BROKERS =~ ^[0-9]+$ || $BROKERS -lt 1 ]]; then
    echo "make-secrets: --brokers must be a positive number" >&2
    exit 2
fi

# The names the certificate must hold, one a line, in a stable order.
hosts() {
    local svc ns i
    for svc in kelp-master kelp-filer kelp-broker kelp-volume; do echo "$svc"; done
    for ((i = 0; i < VOLUMES; i++)); do echo "kelp-volume-$i.kelp-volume"; done
    for ns in "${NAMESPACES[@]}"; do
        for svc in kelp-master kelp-filer kelp-broker kelp-volume; do
            echo "$svc.$ns"
            echo "$svc.$ns.svc"
            echo "$svc.$ns.svc.cluster.local"
        done
        for ((i = 0; i < VOLUMES; i++)); do echo "kelp-volume-$i.kelp-volume.$ns.svc"; done
    done
    [[ $HA == 1 ]] || return 0
    for ((i = 0; i < MASTERS; i++)); do echo "kelp-master-$i.kelp-master"; done
    for ((i = 0; i < BROKERS; i++)); do echo "kelp-broker-$i.kelp-broker-headless"; done
    echo kelp-etcd
    for ((i = 0; i < ETCD_MEMBERS; i++)); do echo "kelp-etcd-$i.kelp-etcd"; done
    for ns in "${NAMESPACES[@]}"; do
        for ((i = 0; i < MASTERS; i++)); do echo "kelp-master-$i.kelp-master.$ns.svc"; done
        for ((i = 0; i < BROKERS; i++)); do echo "kelp-broker-$i.kelp-broker-headless.$ns.svc"; done
        echo "kelp-etcd.$ns"
        echo "kelp-etcd.$ns.svc"
        echo "kelp-etcd.$ns.svc.cluster.local"
        for ((i = 0; i < ETCD_MEMBERS; i++)); do echo "kelp-etcd-$i.kelp-etcd.$ns.svc"; done
    done
}
WANT_HOSTS="$(hosts)"

# The files the kustomize base reads (see base/kustomization.yaml).
FILES=(ca.pem cert.pem key.pem jwt-signing.key cluster.token api-keys write.api-key read.api-key)

if [[ $FORCE == 0 && -d $OUT ]]; then
    present=0
    for f in "${FILES[@]}"; do [[ -s $OUT/$f ]] && present=$((present + 1)); done
    if [[ $present == "${#FILES[@]}" ]]; then
        if [[ -f $OUT/hosts && "$(cat "$OUT/hosts")" == "$WANT_HOSTS" ]]; then
            echo "make-secrets: $OUT is up to date (use --force to regenerate)"
            exit 0
        fi
        echo "make-secrets: $OUT holds a certificate for other names than asked" \
             "(other --namespace or --volumes); rerun with --force to regenerate everything" >&2
        exit 1
    elif [[ $present -gt 0 ]]; then
        echo "make-secrets: $OUT holds only some of the files (${FILES[*]});" \
             "rerun with --force to regenerate everything" >&2
        exit 1
    fi
fi

# Find the kelp binary.
KELP=""
if [[ -n ${KELP_BIN:-} ]]; then
    KELP="$KELP_BIN"
elif [[ -n ${KELP_BIN_DIR:-} ]]; then
    KELP="$KELP_BIN_DIR/kelp"
else
    target="${CARGO_TARGET_DIR:-target}"
    [[ $target == /* ]] || target="$REPO_DIR/$target"
    if [[ -x $target/debug/kelp ]]; then
        KELP="$target/debug/kelp"
    elif command -v kelp >/dev/null 2>&1; then
        KELP="$(command -v kelp)"
    else
        KELP="$target/debug/kelp"
    fi
fi
if [[ ! -x $KELP ]]; then
    echo "make-secrets: the kelp binary ($KELP) is missing: run" \
         "\`cargo build --workspace --bins\` first, or point KELP_BIN at it" >&2
    exit 1
fi

host_args=()
while IFS= read -r h; do host_args+=(--host "$h"); done <<<"$WANT_HOSTS"
mkdir -p "$OUT"
chmod 700 "$OUT"
# --force for `kelp cert` too: files it would refuse to replace (ca-key.pem, jwt-read.key, or
# an incomplete earlier run) were either rejected above or --force was given.
"$KELP" cert --out "$OUT" "${host_args[@]}" --force >/dev/null
rm -f "$OUT/ca-key.pem"
printf '%s\n' "$WANT_HOSTS" >"$OUT/hosts"
for f in "${FILES[@]}"; do
    [[ -s $OUT/$f ]] || { echo "make-secrets: $KELP cert did not write $OUT/$f" >&2; exit 1; }
done
echo "make-secrets: wrote ${FILES[*]} to $OUT (certificate for $(wc -l <<<"$WANT_HOSTS")" \
     "names; namespaces ${NAMESPACES[*]}, $VOLUMES volume servers$([[ $HA == 0 ]] || echo ", $MASTERS masters, $BROKERS brokers and etcd (--ha)"))"
