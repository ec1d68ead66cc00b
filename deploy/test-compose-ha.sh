#!/usr/bin/env bash
# Runs the highly available compose deployment (deploy/compose-ha.yaml) for real, breaks it the
# ways a real cluster breaks, and checks that writes go on and nothing acknowledged is lost:
#
#   1. validates compose-ha.yaml (no engine needed); skips with "SKIPPED: no Docker engine"
#      when none answers. Builds the runtime image from the host binaries
#      (deploy/build-image.sh, as test-compose.sh does: the binaries under test, removed at the
#      end), and the offline base image and the etcd image (deploy/build-etcd-image.sh) only
#      when missing (both kept);
#   2. generates the credentials (`kelp cert` with every service name of the file, etcd's
#      included), brings the stack up under a unique project name with every data dir
#      bind-mounted from a temporary directory, and waits until all 13 containers are healthy;
#   3. security of the new parts: etcd's ports are not published, etcd refuses plain http and
#      TLS without a client certificate (from inside the network), every container (etcd too)
#      runs as non-root and holds only its secrets, a standby master answers a client 307 to
#      the leader's advertised name and /cluster/status needs an API key;
#   4. the two brokers share the partitions of a topic of KELP_HA_PARTITIONS (8): each owns
#      some, and a fetch of every partition (GET .../records?offset=0, redirects not followed)
#      is answered 200 by its owner and 307 to https://<owner's advertised name>/<same path and
#      query>&redirected=true by the other; a publish spanning partitions of both is 409 `partitions_split`;
#      Kafka Metadata (kcat, when installed) names both brokers at their published ports and
#      the same leader for each partition; the schema registry, given both brokers, registers
#      a schema (following the 307 to its topic's owner when it asks the other first);
#   5. from the host, over https trusting only the generated CA, with the write API key, three
#      writers run until the end: blobs (`kelp upload --master <both masters> --use-public-url`,
#      the client following the leader), files through each filer (curl), durable publishes to
#      every partition through both brokers (broker_client.py: it goes to a broker that
#      accepts a connection and follows 307s to the other, mapped to its published port);
#      every acknowledged write is recorded;
#   6. `docker kill` the leading master: the other is elected, every writer resumes (the times
#      count from the moment it died, docker's FinishedAt); `docker start` it: it comes back as
#      a standby naming the new leader;
#   7. `docker network disconnect` the leading master: the other is elected, the cut-off one
#      reports IsLeader false (asked inside its container: the host cannot reach it), every
#      writer resumes while it is cut off and still writes in the last 4 s of the cut (at least
#      KELP_PARTITION_SECONDS, 10 s, in all); reconnected, it is a standby;
#   8. `docker kill` etcd's raft leader and filer1 together: blob writes, file writes through
#      filer2 and durable publishes (the brokers reach the filers as `filer`) go on; both are
#      started again and writes through filer1 resume;
#   9. `docker network disconnect` the broker owning partition 0: the other keeps acknowledging
#      durable publishes to its own partitions throughout, and serves every partition (200 to
#      the fetch of each) and acknowledges durable publishes to each within
#      KELP_BROKER_TAKEOVER_LIMIT (30 s: the 10 s member lease and a margin; both times are
#      measured and printed); reconnected, the cut-off broker gets a share back (the owners
#      settle with both owning partitions) and publishes to every partition go on;
#  10. every acknowledged blob (read from BOTH of its replicas, the volume servers the masters
#      name: replication 001; the first and last three also with `kelp download --master <both>`),
#      file (read through BOTH filers) and record (read through the brokers, each partition from
#      its owner) is byte-identical to what was written, every record at exactly one offset (no
#      record appended twice), and no file id was handed out twice.
#
# Step timings are printed as it goes, and the failover times in a summary at the end (about
# 2 minutes in all on 2 cores). Always tears down (`down -v`, the network, the test image, the
# temporary directory); the kelp-base and kelp-etcd images are kept.
#
# The cut-off broker may log ERROR "another broker took the partition over" (its commits under
# the old epoch are refused once the other took its partitions): expected. This script does not
# fail on log levels; it prints the ERROR lines the brokers logged.
#
# env: KELP_COMPOSE (default: docker-compose, else "docker compose"), KELP_PARTITION_SECONDS (10),
#      KELP_HA_PARTITIONS (8), KELP_BROKER_TAKEOVER_LIMIT (30),
#      KELP_BIN_DIR (host binaries, default <repo>/target/debug), KELP_ETCD_IMAGE (kelp-etcd:dev),
#      KELP_KEEP=1 (leave the stack and data up for inspection; prints how to remove them).
set -euo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$DEPLOY_DIR/.." && pwd)"
PARTITION_SECONDS="${KELP_PARTITION_SECONDS:-10}"
PARTS="${KELP_HA_PARTITIONS:-8}"
TAKEOVER_LIMIT="${KELP_BROKER_TAKEOVER_LIMIT:-30}"
T0=$SECONDS

# shellcheck source=deploy/lib-compose.sh
source "$DEPLOY_DIR/lib-compose.sh"
COMPOSE_YAML="$DEPLOY_DIR/compose-ha.yaml"
compose_preflight ""

PROJECT="kelpha$$$(date +%s)"
NET="${PROJECT}_default"
IMAGE="kelp-test:$PROJECT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kelp-compose-ha-test.XXXXXX")"
SECRETS="$WORK/secrets"
CA="$SECRETS/ca.pem"
ACKED="$WORK/published.jsonl"     # durable publishes acknowledged (broker_client.py)
BLOBS="$WORK/blobs.acked"         # fid n t_start t_ack
FILES="$WORK/files.acked"         # filer path local-file t_start t_ack
STOP="$WORK/stop"                 # the writers stop when it exists
CLIENT=(python3 "$DEPLOY_DIR/broker_client.py" --ca "$CA" --api-key-file "$SECRETS/write.api-key")
SERVICES=(etcd1 etcd2 etcd3 master1 master2 volume1 volume2 volume3 filer1 filer2 broker1 broker2 registry)
MASTERS=(master1 master2)
FILERS=(filer1 filer2)
BG_PIDS=()
STACK_UP=0

export DATA_DIR="$WORK/data"
export KELP_SECRETS_DIR="$SECRETS"
export KELP_IMAGE="$IMAGE"
export KELP_ETCD_IMAGE="${KELP_ETCD_IMAGE:-kelp-etcd:dev}"
# Host ports on 127.0.0.1 only. The masters', volume servers', filers' and brokers' are free
# ports chosen here: they must stay the same across `docker kill` + `docker start` and network
# disconnect + connect (an ephemeral one would change), since the writers keep using them, the
# volume servers' are in their publicUrl and the Kafka listeners advertise theirs.
mapfile -t ports < <(free_ports 11)
export KELP_BIND=127.0.0.1 \
    KELP_MASTER1_PORT="${ports[0]}" KELP_MASTER2_PORT="${ports[1]}" \
    KELP_VOLUME1_PORT="${ports[2]}" KELP_VOLUME2_PORT="${ports[3]}" KELP_VOLUME3_PORT="${ports[4]}" \
    KELP_FILER1_PORT="${ports[5]}" KELP_FILER2_PORT="${ports[6]}" \
    KELP_BROKER1_PORT="${ports[7]}" KELP_BROKER2_PORT="${ports[8]}" \
    KELP_KAFKA1_PORT="${ports[9]}" KELP_KAFKA2_PORT="${ports[10]}" KELP_REGISTRY_PORT=
declare -A PORT_OF=([master1]=$KELP_MASTER1_PORT [master2]=$KELP_MASTER2_PORT
                    [filer1]=$KELP_FILER1_PORT [filer2]=$KELP_FILER2_PORT
                    [broker1]=$KELP_BROKER1_PORT [broker2]=$KELP_BROKER2_PORT)
declare -A KAFKA_PORT_OF=([broker1]=$KELP_KAFKA1_PORT [broker2]=$KELP_KAFKA2_PORT)
MASTER_LIST="127.0.0.1:$KELP_MASTER1_PORT,127.0.0.1:$KELP_MASTER2_PORT"
# The brokers as broker_client.py takes them: each one's advertised name (what the other's 307s
# name) mapped to its published port.
BROKERS="broker1:17777=127.0.0.1:$KELP_BROKER1_PORT,broker2:17777=127.0.0.1:$KELP_BROKER2_PORT"
export OTEL_EXPORTER_OTLP_ENDPOINT=
# A durable publish not durable within 10 s is answered 503 + Retry-After (the writer retries).
export KELP_DURABLE_TIMEOUT_MS=10000
export KELP_LEADER_TTL_SECS="${KELP_LEADER_TTL_SECS:-5}"
trap compose_cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
# died_at CONTAINER...: when the last of them stopped (docker's FinishedAt), in unix seconds:
# the moment a `docker kill` took effect, which the command's return only bounds.
died_at() {
    local c t latest=0
    for c in "$@"; do
        t="$(date -d "$(docker inspect -f '{{.State.FinishedAt}}' "$c")" +%s.%N)"
        latest="$(python3 -c 'import sys; print(max(map(float, sys.argv[1:])))' "$latest" "$t")"
    done
    echo "$latest"
}
# since T: seconds from T to now, one decimal.
since() { python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.1f}")' "$1"; }
other() { [[ "$1" == "$2" ]] && echo "$3" || echo "$2"; }

# The kelp CLI on the host: https trusting the CA, the key from the environment (not argv),
# none of the caller's KELP_* settings.
kelp_host() {
    KELP_API_KEY="${CLI_KEY:-$WRITE_KEY}" RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 \
        env -u KELP_CLUSTER_TOKEN_FILE -u KELP_MASTER -u KELP_TLS_CA -u KELP_API_KEY_FILE \
        "$BIN_DIR/kelp" --tls-ca "$CA" "$@"
}

# status_host M: GET /cluster/status of master M through its published port (read key).
status_host() {
    curl -sS -m 3 --cacert "$CA" -H @"$WORK/read.hdr" "https://127.0.0.1:${PORT_OF[$1]}/cluster/status" 2>/dev/null || true
}
# status_in M: the same, asked inside M's container (answers while M is cut off the network).
status_in() {
    docker exec -i "$(cid "$1")" curl -sS -m 3 --cacert /run/secrets/tls-ca -H @- \
        https://127.0.0.1:9333/cluster/status <"$WORK/read.hdr" 2>/dev/null || true
}
leads() { [[ "$1" == *'"IsLeader":true'* ]]; }
# role_change M T WHAT: seconds from T to the first "master role changed" line of master M's log
# after T that matches WHAT (to=Leader, from=Leader): when it happened, to the log's
# microsecond, rather than when a poll from the host saw it. Empty when there is none.
role_change() {
    docker logs --since "$(date -u -d "@${2%.*}" +%Y-%m-%dT%H:%M:%S)" "$(cid "$1")" 2>&1 \
        | sed 's/\x1b\[[0-9;]*m//g' | grep 'master role changed' | grep -e "$3" \
        | python3 -c '
import datetime, sys
t = float(sys.argv[1])
for line in sys.stdin:
    at = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")[:26] + "+00:00").timestamp()
    if at > t:
        print(f"{at - t:.1f}")
        break' "$2"
}
# leader_of STATUS: the "Leader" it names.
leader_of() { sed -n 's/.*"Leader":"\([^"]*\)".*/\1/p' <<<"$1"; }

# wait_leader SECONDS: prints the master that leads (asked from the host), once exactly one does.
wait_leader() {
    local deadline=$((SECONDS + $1)) m found
    while :; do
        found=()
        for m in "${MASTERS[@]}"; do leads "$(status_host "$m")" && found+=("$m"); done
        if [[ ${#found[@]} == 1 ]]; then echo "${found[0]}"; return 0; fi
        (( SECONDS < deadline )) || fail "no single leading master within $1 s (leading: ${found[*]:-none})"
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------------------------
# The writers. Each runs in the background until $STOP exists and records what was acknowledged.
blob_writer() {
    local n=0 f t0 out fid
    mkdir -p "$WORK/blobs"
    while [[ ! -e "$STOP" ]]; do
        n=$((n + 1))
        f="$WORK/blobs/$n"
        head -c $((512 + RANDOM % 8192)) /dev/urandom >"$f"
        t0="$(now)"
        if out="$(kelp_host upload --use-public-url --master "$MASTER_LIST" "$f" 2>"$WORK/blob.err")" &&
            fid="$(grep -Eo '^[0-9]+,[0-9a-f]+' <<<"$out" | head -n1)" && [[ -n "$fid" ]]; then
            echo "$fid $n $t0 $(now)" >>"$BLOBS"
        else
            echo "$n $t0 $(now) $(tail -n1 "$WORK/blob.err" | cut -c1-200)" >>"$WORK/blobs.failed"
            rm -f "$f"
            sleep 0.3
        fi
        sleep 0.2
    done
}
file_writer() {   # FILER
    local filer=$1 n=0 f path t0 code
    mkdir -p "$WORK/files"
    while [[ ! -e "$STOP" ]]; do
        n=$((n + 1))
        f="$WORK/files/$filer-$n"
        path="/ha/$filer/$n.bin"
        head -c $((256 + RANDOM % 16384)) /dev/urandom >"$f"
        t0="$(now)"
        code="$(curl -sS -m 30 --http1.1 --cacert "$CA" -H @"$WORK/write.hdr" -o /dev/null -w '%{http_code}' \
            -F "file=@$f" "https://127.0.0.1:${PORT_OF[$filer]}$path" 2>/dev/null || true)"
        if [[ "$code" == 20[01] ]]; then
            echo "$filer $path $f $t0 $(now)" >>"$FILES"
        else
            echo "$filer $path $t0 $(now) HTTP $code" >>"$WORK/files.failed"
            rm -f "$f"
            sleep 0.3
        fi
        sleep 0.3
    done
}

# resumed KIND T [FILER]: the seconds from T (unix time) to the first acknowledgement of a write
# of KIND (blob, file, publish) sent after T; empty while there is none. A publish counts from
# its acknowledgement (the writer records no send time), so one in flight at T may count.
resumed() {
    local kind=$1 t=$2 filer=${3:-}
    case "$kind" in
        blob) awk -v t="$t" '$3 > t { if (m == "" || $4 < m) m = $4 } END { if (m != "") printf "%.1f\n", m - t }' "$BLOBS" ;;
        file) awk -v t="$t" -v f="$filer" '$1 == f && $4 > t { if (m == "" || $5 < m) m = $5 } END { if (m != "") printf "%.1f\n", m - t }' "$FILES" ;;
        publish) python3 - "$ACKED" "$t" <<'EOF' ;;
import json, sys
t = float(sys.argv[2])
after = [r["t"] for r in map(json.loads, open(sys.argv[1])) if r["t"] > t]
if after:
    print(f"{min(after) - t:.1f}")
EOF
    esac
}

# await_writes WHAT T SECONDS FILER...: waits until blobs, files through each FILER and durable
# publishes have all been acknowledged again after T, within SECONDS of T; logs the times and
# sets RESUMED (the slowest).
await_writes() {
    local what=$1 t=$2 limit=$3 kind r pending line; shift 3
    local -A got=()
    while :; do
        pending=()
        for kind in blob publish "${@/#/file:}"; do
            [[ -n "${got[$kind]:-}" ]] && continue
            r="$(resumed "${kind%%:*}" "$t" "${kind#file:}")"
            if [[ -n "$r" ]]; then got[$kind]=$r; else pending+=("$kind"); fi
        done
        [[ ${#pending[@]} == 0 ]] && break
        if python3 -c 'import sys, time; sys.exit(0 if time.time() - float(sys.argv[1]) > float(sys.argv[2]) else 1)' "$t" "$limit"; then
            tail -n 3 "$WORK/blobs.failed" "$WORK/files.failed" 2>/dev/null >&2 || true
            fail "$what: no ${pending[*]} acknowledged within $limit s"
        fi
        sleep 0.5
    done
    line="blobs +${got[blob]} s"
    RESUMED=${got[blob]}
    for kind in "${@/#/file:}"; do
        line+=", files via ${kind#file:} +${got[$kind]} s"
        RESUMED="$(python3 -c 'import sys; print(max(map(float, sys.argv[1:])))' "$RESUMED" "${got[$kind]}")"
    done
    line+=", durable publishes +${got[publish]} s"
    RESUMED="$(python3 -c 'import sys; print(max(map(float, sys.argv[1:])))' "$RESUMED" "${got[publish]}")"
    log "  writes acknowledged again after $what: $line"
}

# acked_between T1 T2: "BLOBS FILES PUBLISHES", the writes acknowledged in (T1, T2) (blobs and
# files also sent in it).
acked_between() {
    local b f p
    b="$(awk -v a="$1" -v z="$2" '$3 > a && $4 < z' "$BLOBS" | wc -l)"
    f="$(awk -v a="$1" -v z="$2" '$4 > a && $5 < z' "$FILES" | wc -l)"
    p="$("${CLIENT[@]}" acks-between ha events --acked "$ACKED" "$1" "$2")"
    echo "$b $f $p"
}
count_acked_between() {
    local b f p
    read -r b f p < <(acked_between "$1" "$2")
    echo "$b blobs, $f files, $p durable publishes"
}

# ---------------------------------------------------------------------------------------------
step "build: the runtime image from the host binaries; kelp-base and $KELP_ETCD_IMAGE if missing"
build_image
"$DEPLOY_DIR/build-etcd-image.sh" "$KELP_ETCD_IMAGE"

step "credentials: kelp cert for every name of compose-ha.yaml (etcd's included)"
make_credentials --host master1 --host master2 --host volume1 --host volume3 --host filer1 \
    --host filer2 --host broker1 --host broker2 --host etcd1 --host etcd2 --host etcd3

step "compose up (project $PROJECT, data in $DATA_DIR)"
prepare_mounts
log "compose: ${COMPOSE[*]}; services run as uid $KELP_UID; masters on 127.0.0.1:$KELP_MASTER1_PORT and :$KELP_MASTER2_PORT"
STACK_UP=1
t_up=$SECONDS
dc up -d >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; fail "compose up"; }
wait_healthy 240
log "all 13 healthy in $((SECONDS - t_up)) s: ${SERVICES[*]}"
for b in broker1 broker2; do
    p="$(dc port "$b" 17777 | tail -n1)"
    [[ "$p" == "127.0.0.1:${PORT_OF[$b]}" ]] || fail "$b: port 17777 published at '$p', not 127.0.0.1:${PORT_OF[$b]}"
done

# ---------------------------------------------------------------------------------------------
step "security of the HA parts: etcd (TLS + client certificates, not published), masters"
for e in etcd1 etcd2 etcd3; do
    p="$(dc port "$e" 2379 2>/dev/null || true)"
    [[ ! "$p" =~ :[1-9][0-9]*$ ]] || fail "$e publishes its client port ($p)"
    p="$(dc port "$e" 2380 2>/dev/null || true)"
    [[ ! "$p" =~ :[1-9][0-9]*$ ]] || fail "$e publishes its peer port ($p)"
done
log "  ok: no etcd port is published on the host"
# From filer1's container (one `docker exec`): each member over plain http, over TLS without a
# client certificate, and over TLS with the cluster's certificate (its name verified).
docker exec "$(cid filer1)" sh -c '
    for e in etcd1 etcd2 etcd3; do
        plain=$(curl -sS -m 5 -o /dev/null -w "%{http_code}" "http://$e:2379/health" 2>/dev/null)
        anon=$(curl -sS -m 5 -o /dev/null -w "%{http_code}" --cacert /run/secrets/tls-ca "https://$e:2379/health" 2>/dev/null)
        cert=$(curl -sS -m 5 -o /dev/null -w "%{http_code}" --cacert /run/secrets/tls-ca \
            --cert /run/secrets/tls-cert --key /run/secrets/tls-key "https://$e:2379/health" 2>/dev/null)
        echo "$e $plain $anon $cert"
    done' >"$WORK/etcd-access" || true
while read -r e plain anon cert; do
    [[ "$plain" == 000 ]] || fail "$e answered plain http inside the network (HTTP $plain)"
    [[ "$anon" == 000 ]] || fail "$e answered a TLS client without a client certificate (HTTP $anon)"
    [[ "$cert" == 200 ]] || fail "https://$e:2379/health with the cluster certificate: HTTP $cert (is $e in the certificate?)"
done <"$WORK/etcd-access"
[[ "$(wc -l <"$WORK/etcd-access")" == 3 ]] || fail "could not probe the etcd members: $(cat "$WORK/etcd-access")"
log "  ok: every etcd member refuses plain http and TLS without a client certificate, and answers https://etcdN:2379/health to the cluster's certificate"
declare -A WANT_SECRETS=()
for s in "${SERVICES[@]}"; do
    case "$s" in
        etcd*) WANT_SECRETS[$s]="tls-ca tls-cert tls-key" ;;
        volume*) WANT_SECRETS[$s]="cluster-token jwt-signing-key tls-ca tls-cert tls-key" ;;
        registry) WANT_SECRETS[$s]="api-keys cluster-token tls-ca tls-cert tls-key" ;;
        *) WANT_SECRETS[$s]="api-keys cluster-token jwt-signing-key tls-ca tls-cert tls-key" ;;
    esac
    { read -r u; got="$(sort | tr '\n' ' ' | sed 's/ $//')"; } < <(docker exec "$(cid "$s")" sh -c 'id -u; ls /run/secrets')
    [[ "$u" != 0 && "$u" == "$KELP_UID" ]] || fail "$s runs as uid $u (expected $KELP_UID, never 0)"
    [[ "$got" == "${WANT_SECRETS[$s]}" ]] || fail "$s has secrets '$got', expected '${WANT_SECRETS[$s]}'"
done
log "  ok: all 13 containers run as uid $KELP_UID and hold only their secrets (etcd: the certificate, its key, the CA)"
LEADER="$(wait_leader 30)"
STANDBY="$(other "$LEADER" "${MASTERS[@]}")"
for m in "${MASTERS[@]}"; do
    expect "$m /cluster/status without a key" 401 api_key_required GET "https://127.0.0.1:${PORT_OF[$m]}/cluster/status"
done
expect "standby $STANDBY: /dir/assign with the write key" 307 - GET \
    "https://127.0.0.1:${PORT_OF[$STANDBY]}/dir/assign" -H @"$WORK/write.hdr" -D "$WORK/headers"
loc="$(tr -d '\r' <"$WORK/headers" | sed -n 's/^[Ll]ocation: //p')"
[[ "$loc" == "https://$LEADER:9333/dir/assign" ]] || fail "the standby redirected to '$loc', not https://$LEADER:9333/dir/assign"
log "  ok: $LEADER leads; the standby $STANDBY redirects clients to $loc (its advertised name)"

# ---------------------------------------------------------------------------------------------
# owners BROKERS... [owners options]: broker_client.py owners of ha/events (see its doc): polls
# until every partition has one owner answering 200 and 307s to it from the other brokers
# asked; prints {"owners": {partition: "brokerN:17777"}, ...}.
owners() { "${CLIENT[@]}" owners "$BROKERS" ha events "$PARTS" "$@"; }
# owned_by OWNERS_JSON BROKER: the partitions BROKER (brokerN) owns, space-separated.
owned_by() {
    python3 -c 'import json, sys; print(" ".join(p for p, b in json.loads(sys.argv[1])["owners"].items() if b == sys.argv[2] + ":17777"))' "$1" "$2"
}
# first_acks T PARTITION...: the seconds from T to the first durable publish acknowledged after T
# to each PARTITION, as "p=seconds" words ("p=-" while none).
first_acks() {
    python3 - "$ACKED" "$@" <<'EOF'
import json, sys
acked, t, parts = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
first = {}
for r in map(json.loads, open(acked)):
    p = str(r["partition"])
    if r["topic"] == "ha/events" and r["t"] > t and (p not in first or r["t"] < first[p]):
        first[p] = r["t"]
print(" ".join(f"{p}={first[p] - t:.1f}" if p in first else f"{p}=-" for p in parts))
EOF
}
# await_all_partitions WHAT T SECONDS: waits until a durable publish to every partition of
# ha/events was acknowledged after T, within SECONDS of T; sets ALL_ACKED (the slowest, seconds
# after T).
await_all_partitions() {
    local what=$1 t=$2 limit=$3 got
    while :; do
        got="$(first_acks "$t" $(seq 0 $((PARTS - 1))))"
        [[ " $got" != *=-* ]] && break
        if python3 -c 'import sys, time; sys.exit(0 if time.time() - float(sys.argv[1]) > float(sys.argv[2]) else 1)' "$t" "$limit"; then
            python3 -c 'import json, sys; print(json.load(open(sys.argv[1])))' "$WORK/publish.json" >&2 || true
            fail "$what: not every partition got a durable publish acknowledged within $limit s (first acks: $got)"
        fi
        sleep 0.5
    done
    ALL_ACKED="$(tr ' ' '\n' <<<"$got" | cut -d= -f2 | sort -g | tail -n1)"
}

step "two brokers share the partitions: owners, 307s, 409 partitions_split, Kafka Metadata, registry"
"${CLIENT[@]}" create "$BROKERS" ha events "$PARTS" >/dev/null
OWNERS="$(owners --wait 60 --min-owners 2)" || fail "the two brokers do not share the $PARTS partitions of ha/events"
P1="$(owned_by "$OWNERS" broker1)" P2="$(owned_by "$OWNERS" broker2)"
log "  ok: broker1 owns partitions [$P1], broker2 [$P2] of ha/events: each partition's fetch (offset 0, redirects not followed) is 200 on its owner and 307 to https://<owner>:17777/<same path and query>&redirected=true on the other"
python3 -c 'import json, sys; [print(f"    p{p}: {a}") for p, a in json.loads(sys.argv[1])["answers"].items()]' "$OWNERS"
read -r pa _ <<<"$P1"
read -r pb _ <<<"$P2"
for b in broker1 broker2; do
    expect "one publish to p$pa (broker1's) and p$pb (broker2's) through $b" 409 partitions_split \
        POST "https://127.0.0.1:${PORT_OF[$b]}/topics/ha/events/publish" -H @"$WORK/write.hdr" \
        -H 'Content-Type: application/json' \
        -d "{\"records\":[{\"value\":\"split-a\",\"partition\":$pa},{\"value\":\"split-b\",\"partition\":$pb}]}"
done
if command -v kcat >/dev/null 2>&1; then
    # The same ownership through Kafka: a topic of the Kafka namespace, its leaders as Metadata
    # names them (each broker advertises its published Kafka port) against its HTTP owners.
    "${CLIENT[@]}" create "$BROKERS" kafka ha-meta "$PARTS" >/dev/null
    kowners="$("${CLIENT[@]}" owners "$BROKERS" kafka ha-meta "$PARTS" --wait 60)" \
        || fail "the owners of kafka/ha-meta do not settle"
    sasl=(-X security.protocol=SASL_SSL -X sasl.mechanisms=PLAIN -X sasl.username=app
          -X "ssl.ca.location=$CA" -X "sasl.password=$WRITE_KEY")
    kcat -L -J -b "127.0.0.1:$KELP_KAFKA1_PORT" -t ha-meta -m 10 "${sasl[@]}" >"$WORK/kcat.json" 2>"$WORK/kcat.err" \
        || { cat "$WORK/kcat.err" >&2; fail "kcat -L against broker1's Kafka listener"; }
    if ! out="$(python3 - "$WORK/kcat.json" "$kowners" "broker1:17777=127.0.0.1:$KELP_KAFKA1_PORT" \
        "broker2:17777=127.0.0.1:$KELP_KAFKA2_PORT" 2>&1 <<'EOF'
import json, sys
md, owners = json.load(open(sys.argv[1])), json.loads(sys.argv[2])["owners"]
kafka_of = dict(a.split("=") for a in sys.argv[3:])
brokers = {b["id"]: b["name"] for b in md["brokers"]}
want = set(kafka_of.values())
if set(brokers.values()) != want:
    sys.exit(f"Metadata names brokers {sorted(brokers.values())}, expected {sorted(want)}")
topic = next(t for t in md["topics"] if t["topic"] == "ha-meta")
leaders = {str(p["partition"]): brokers.get(p["leader"]) for p in topic["partitions"]}
bad = [f"p{p}: leader {leaders.get(p)}, HTTP owner {b}" for p, b in owners.items() if leaders.get(p) != kafka_of[b]]
if bad or len(leaders) != len(owners):
    sys.exit(f"{len(leaders)} partitions in Metadata; " + "; ".join(bad))
print(f"  ok: Kafka Metadata names both brokers ({', '.join(sorted(want))}, node ids {sorted(brokers)}) "
      f"and, for each of the {len(leaders)} partitions of ha-meta, the leader that owns it over HTTP")
EOF
)"; then
        fail "Kafka Metadata does not match the brokers' HTTP ownership: $out"
    fi
    log "$out"
else
    log "(kcat not installed: Kafka Metadata of the two brokers was not checked here)"
fi
REGISTRY="$(dc port registry 8081 | tail -n1)"
REGISTRY_SCHEMA='{"type":"record","name":"HaCheck","fields":[{"name":"a","type":"int"}]}'
reg_id="$(python3 -c 'import json, sys; print(json.dumps({"schema": sys.argv[1]}))' "$REGISTRY_SCHEMA" \
    | curl -fsS -m 60 --cacert "$CA" -H @"$WORK/write.hdr" -X POST \
        -H 'Content-Type: application/vnd.schemaregistry.v1+json' --data-binary @- \
        "https://$REGISTRY/subjects/ha-check-value/versions" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')" \
    || fail "registering a schema with the schema registry (KELP_BROKER: both brokers)"
rowner="$("${CLIENT[@]}" owners "$BROKERS" registry _schemas 1 --wait 30)" || fail "the owner of registry/_schemas does not settle"
log "  ok: the schema registry registered ha-check-value as id $reg_id; its topic registry/_schemas is owned by $(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["owners"]["0"])' "$rowner")"

# ---------------------------------------------------------------------------------------------
step "writers: blobs (kelp CLI, both masters), files through filer1 and filer2, durable publishes to $PARTS partitions through both brokers"
: >"$BLOBS"; : >"$FILES"; : >"$ACKED"; : >"$WORK/blobs.failed"; : >"$WORK/files.failed"
blob_writer & BG_PIDS+=($!)
file_writer filer1 & BG_PIDS+=($!)
file_writer filer2 & BG_PIDS+=($!)
# One publisher per partition (a request held up by a broker being cut off holds up only its
# partition), each pausing 0.5 s after an acknowledgement; answers awaited 20 s (the brokers'
# durable timeout here is 10 s).
"${CLIENT[@]}" --timeout 20 loop "$BROKERS" ha events --acked "$ACKED" --stats "$WORK/publish.json" \
    --stop "$STOP" --prefix ha --partitions "$PARTS" --threads "$PARTS" --pause 0.5 & BG_PIDS+=($!)
t_start="$(now)"
await_writes "the start" "$t_start" 60 "${FILERS[@]}"
sleep 2
log "  acknowledged so far: $(count_acked_between 0 "$(now)")"

# ---------------------------------------------------------------------------------------------
step "docker kill the leading master ($LEADER)"
docker kill "$(cid "$LEADER")" >/dev/null
t_kill="$(died_at "$(cid "$LEADER")")"
log "killed $LEADER ($(since "$t_kill") s ago, by docker's FinishedAt); times below count from then"
while ! leads "$(status_host "$STANDBY")"; do
    python3 -c 'import sys, time; sys.exit(0 if time.time() - float(sys.argv[1]) < 30 else 1)' "$t_kill" \
        || fail "$STANDBY did not take over within 30 s of the kill"
    sleep 0.2
done
KILL_SEEN="$(since "$t_kill")"
KILL_ELECTED="$(role_change "$STANDBY" "$t_kill" 'to=Leader')"
log "  $STANDBY leads: elected ${KILL_ELECTED:-?} s after the kill (its log), seen from the host after $KILL_SEEN s"
KILL_ELECTED="${KILL_ELECTED:-$KILL_SEEN}"
await_writes "the kill of $LEADER" "$t_kill" 60 "${FILERS[@]}"
KILL_RESUMED=$RESUMED
docker start "$(cid "$LEADER")" >/dev/null
wait_healthy 120
st="$(status_host "$LEADER")"
if leads "$st" || [[ "$(leader_of "$st")" != "$STANDBY:9333" ]]; then
    fail "$LEADER, started again, should follow $STANDBY: $st"
fi
log "  $LEADER started again: a standby following $(leader_of "$st") ($st)"
LEADER=$STANDBY
STANDBY="$(other "$LEADER" "${MASTERS[@]}")"

# ---------------------------------------------------------------------------------------------
step "network partition: the leading master ($LEADER) disconnected from $NET"
CUT_C="$(cid "$LEADER")"
docker network disconnect -f "$NET" "$CUT_C"
t_cut="$(now)"   # (the command has returned: it is cut off from here on at the latest)
log "disconnected $LEADER; times below count from the return of docker network disconnect"
CUT_ELECTED="" CUT_STEPPED=""
while [[ -z "$CUT_ELECTED" || -z "$CUT_STEPPED" ]]; do
    [[ -z "$CUT_ELECTED" ]] && leads "$(status_host "$STANDBY")" && CUT_ELECTED="$(since "$t_cut")"
    if [[ -z "$CUT_STEPPED" ]]; then
        st="$(status_in "$LEADER")"
        [[ -n "$st" ]] && ! leads "$st" && CUT_STEPPED="$(since "$t_cut")"
    fi
    python3 -c 'import sys, time; sys.exit(0 if time.time() - float(sys.argv[1]) < 30 else 1)' "$t_cut" \
        || fail "within 30 s of the cut: $STANDBY leads after '${CUT_ELECTED:-never}' s, $LEADER stopped leading after '${CUT_STEPPED:-never}' s"
    sleep 0.2
done
e="$(role_change "$STANDBY" "$t_cut" 'to=Leader')"
d="$(role_change "$LEADER" "$t_cut" 'from=Leader')"
log "  $STANDBY leads: elected ${e:-?} s after the cut (its log; seen from the host after $CUT_ELECTED s); the cut-off $LEADER stepped down after ${d:-?} s (its log; IsLeader false asked inside its container after $CUT_STEPPED s: $(status_in "$LEADER"))"
CUT_ELECTED="${e:-$CUT_ELECTED}" CUT_STEPPED="${d:-$CUT_STEPPED}"
got="$(curl -sS -m 3 -o /dev/null -w '%{http_code}' --cacert "$CA" "https://127.0.0.1:${PORT_OF[$LEADER]}/healthz" 2>/dev/null || true)"
[[ "$got" == 000 ]] || fail "the cut-off $LEADER still answers the host (HTTP $got)"
log "  the host cannot reach the cut-off $LEADER (its published port gets no answer)"
await_writes "the cut of $LEADER" "$t_cut" 120 "${FILERS[@]}"
CUT_RESUMED=$RESUMED
# Still cut off for at least KELP_PARTITION_SECONDS in all, and 4 s more: writes of every kind
# must go on until the end (not only resume once), with the new leader seeing every volume
# server (they heartbeat both masters: a silent master must not hold up their heartbeats to
# the other one).
python3 -c 'import sys, time; t = max(float(sys.argv[1]) + float(sys.argv[2]) - time.time(), 4); time.sleep(t)' "$t_cut" "$PARTITION_SECONDS"
t_end="$(now)"
read -r b f p < <(acked_between "$(python3 -c 'import sys; print(float(sys.argv[1]) - 4)' "$t_end")" "$t_end")
st="$(status_host "$STANDBY")"
log "  in the last 4 s of the cut: $b blobs, $f files, $p durable publishes acknowledged; $STANDBY: $st"
(( b > 0 && f > 0 && p > 0 )) || fail "writes stopped while $LEADER was cut off ($b blobs, $f files, $p publishes in its last 4 s; $STANDBY: $st)"
docker network connect --alias "$LEADER" "$NET" "$CUT_C"
log "reconnected $LEADER after $(since "$t_cut") s; acknowledged while it was cut off: $(count_acked_between "$t_cut" "$(now)")"
wait_healthy 120
deadline=$((SECONDS + 30))
while :; do
    st="$(status_host "$LEADER")"
    ! leads "$st" && [[ "$(leader_of "$st")" == "$STANDBY:9333" ]] && break
    (( SECONDS < deadline )) || fail "$LEADER, reconnected, should follow $STANDBY: $st"
    sleep 0.5
done
log "  $LEADER reconnected: a standby following $(leader_of "$st")"
LEADER=$STANDBY
STANDBY="$(other "$LEADER" "${MASTERS[@]}")"

# ---------------------------------------------------------------------------------------------
# etcd_status E: etcd's /v3/maintenance/status of member E, asked inside its container with its
# certificate: {"header":{"member_id":...},"leader":...}.
etcd_status() {
    docker exec "$(cid "$1")" curl -sS -m 3 --cacert /run/secrets/tls-ca --cert /run/secrets/tls-cert \
        --key /run/secrets/tls-key -X POST -d '{}' https://127.0.0.1:2379/v3/maintenance/status
}
ETCD_LEADER=""
for e in etcd1 etcd2 etcd3; do
    if etcd_status "$e" | python3 -c 'import json, sys; s = json.load(sys.stdin); sys.exit(0 if s["leader"] == s["header"]["member_id"] else 1)'; then
        ETCD_LEADER=$e
    fi
done
[[ -n "$ETCD_LEADER" ]] || fail "no etcd member says it is the raft leader"
step "docker kill etcd's raft leader ($ETCD_LEADER) and filer1 together"
docker kill "$(cid "$ETCD_LEADER")" "$(cid filer1)" >/dev/null
t_k="$(died_at "$(cid "$ETCD_LEADER")" "$(cid filer1)")"
log "killed $ETCD_LEADER and filer1 (the later died $(since "$t_k") s ago)"
await_writes "the kill of $ETCD_LEADER and filer1" "$t_k" 60 filer2
ETCD_RESUMED=$RESUMED
sleep 2
log "  acknowledged with $ETCD_LEADER and filer1 down: $(count_acked_between "$t_k" "$(now)"); leading master: $(wait_leader 30)"
docker start "$(cid "$ETCD_LEADER")" "$(cid filer1)" >/dev/null
t_back="$(now)"
wait_healthy 120
await_writes "$ETCD_LEADER and filer1 started again" "$t_back" 60 "${FILERS[@]}"

# ---------------------------------------------------------------------------------------------
OWNERS="$(owners --wait 60)" || fail "the partition owners do not settle before the broker cut"
CUT_B="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["owners"]["0"].split(":")[0])' "$OWNERS")"
SURV_B="$(other "$CUT_B" broker1 broker2)"
CUT_PARTS="$(owned_by "$OWNERS" "$CUT_B")"
SURV_PARTS="$(owned_by "$OWNERS" "$SURV_B")"
step "network partition: the broker owning partition 0 ($CUT_B: partitions [$CUT_PARTS]; $SURV_B owns [$SURV_PARTS]) disconnected from $NET"
CUT_BC="$(cid "$CUT_B")"
docker network disconnect -f "$NET" "$CUT_BC"
t_bcut="$(now)"   # (the command has returned: it is cut off from here on at the latest)
log "disconnected $CUT_B; times below count from the return of docker network disconnect"
# $SURV_B answers 200 for every partition: it took $CUT_B's over (its member lease expired).
"${CLIENT[@]}" owners "$BROKERS" ha events "$PARTS" --all-on "$SURV_B:17777" --wait "$TAKEOVER_LIMIT" >"$WORK/takeover.json" \
    || fail "$SURV_B did not serve every partition within $TAKEOVER_LIMIT s of cutting $CUT_B off"
B_SERVES="$(since "$t_bcut")"
log "  $SURV_B serves all $PARTS partitions (200 to the fetch of each) $B_SERVES s after the cut"
await_all_partitions "the cut of $CUT_B" "$t_bcut" "$TAKEOVER_LIMIT"
B_ACKED=$ALL_ACKED
log "  durable publishes acknowledged after the cut, per partition (s): $(first_acks "$t_bcut" $(seq 0 $((PARTS - 1))))"
log "  every partition acknowledged a durable publish again within $B_ACKED s of the cut (limit $TAKEOVER_LIMIT s; member lease 10 s)"
# $SURV_B's own partitions must not have waited for the takeover: acknowledged within the lease.
own="$(first_acks "$t_bcut" $SURV_PARTS)"
slowest="$(tr ' ' '\n' <<<"$own" | cut -d= -f2 | sort -g | tail -n1)"
python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 10 else 1)' "$slowest" \
    || fail "$SURV_B's own partitions [$SURV_PARTS] waited $slowest s for an acknowledgement while $CUT_B was cut off ($own)"
log "  $SURV_B's own partitions went on meanwhile: first acknowledgements after the cut (s): $own"
got="$(curl -sS -m 3 -o /dev/null -w '%{http_code}' --cacert "$CA" "https://127.0.0.1:${PORT_OF[$CUT_B]}/healthz" 2>/dev/null || true)"
[[ "$got" == 000 ]] || fail "the cut-off $CUT_B still answers the host (HTTP $got)"
# Cut off for at least KELP_PARTITION_SECONDS in all, and 3 s after the takeover: every partition
# goes on being acknowledged.
python3 -c 'import sys, time; t = max(float(sys.argv[1]) + float(sys.argv[2]) - time.time(), 3); time.sleep(t)' "$t_bcut" "$PARTITION_SECONDS"
docker network connect --alias "$CUT_B" --alias broker "$NET" "$CUT_BC"
t_brejoin="$(now)"
log "reconnected $CUT_B after $(since "$t_bcut") s; acknowledged while it was cut off: $(count_acked_between "$t_bcut" "$t_brejoin")"
OWNERS="$(owners --wait 60 --min-owners 2)" || fail "$CUT_B, reconnected, did not get a share of the partitions back within 60 s"
B_BACK="$(since "$t_brejoin")"
log "  $CUT_B owns [$(owned_by "$OWNERS" "$CUT_B")] again, $SURV_B [$(owned_by "$OWNERS" "$SURV_B")]: settled $B_BACK s after the reconnect"
t_settled="$(now)"
await_all_partitions "$CUT_B's return" "$t_settled" 60
log "  durable publishes to every partition acknowledged again within $ALL_ACKED s of the owners settling"
restarts="$(docker inspect -f '{{.RestartCount}}' "$CUT_BC")"
docker logs "$CUT_BC" >"$WORK/cut-broker.log" 2>&1 || true
n_took="$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/cut-broker.log" | grep -c 'another broker took the partition over' || true)"
log "  $CUT_B restarted $restarts time(s); it logged 'another broker took the partition over' $n_took time(s) (expected when it had records to commit under the old epoch)"
wait_healthy 120

# ---------------------------------------------------------------------------------------------
step "read back everything acknowledged"
touch "$STOP"
for p in "${BG_PIDS[@]}"; do wait "$p" || fail "a writer failed"; done
BG_PIDS=()
python3 - "$WORK/publish.json" <<'EOF' || fail "the publishing loop got answers other than 200 or 503 + Retry-After"
import json, sys, time
s = json.load(open(sys.argv[1]))
print(f"  publisher: {s['attempts']} durable publishes, {s['acked']} acknowledged, "
      f"{s['retry_after_503']} x 503 + Retry-After, {s['timeouts']} timeouts, "
      f"{s['conn_errors']} connection errors, {s['redirect_loops']} redirected more than 3 times, "
      f"max ack latency {s['max_ack_latency_s']} s")
for t, detail in s["redirect_samples"]:
    print(f"    redirected more than 3 times at {time.strftime('%H:%M:%S', time.localtime(t))}: {detail}")
if s["bad"]:
    print(f"  unexpected answers: {s['bad_samples']}", file=sys.stderr)
    sys.exit(1)
EOF
dups="$(cut -d' ' -f1 "$BLOBS" | sort | uniq -d | head -n 5)"
[[ -z "$dups" ]] || fail "file ids acknowledged twice: $dups"
# Every blob from EVERY replica the masters list (replication 001: two volume servers each),
# every file through BOTH filers, over https with keep-alive (one process: hundreds of curl or
# kelp processes would take most of a minute here).
python3 - "$CA" "$SECRETS/read.api-key" "$BLOBS" "$FILES" "$WORK/blobs" \
    "127.0.0.1:$KELP_MASTER1_PORT" "127.0.0.1:$KELP_MASTER2_PORT" \
    "filer1=127.0.0.1:$KELP_FILER1_PORT" "filer2=127.0.0.1:$KELP_FILER2_PORT" <<'EOF' || fail "acknowledged blobs or files do not read back"
import http.client, json, ssl, sys
ca, keyfile, blobs, files, blobdir, *rest = sys.argv[1:]
masters = [r for r in rest if "=" not in r]
filers = dict(r.split("=", 1) for r in rest if "=" in r)
ctx = ssl.create_default_context(cafile=ca)
auth = {"Authorization": "Bearer " + open(keyfile).read().strip()}
conns = {}
def get(hostport, path, headers=None):
    for attempt in (1, 2):
        c = conns.get(hostport)
        if c is None:
            host, port = hostport.rsplit(":", 1)
            c = conns[hostport] = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=30)
        try:
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            return r.status, r.getheader("Location"), r.read()
        except (OSError, http.client.HTTPException):
            conns.pop(hostport).close()
            if attempt == 2:
                raise
locations = {}
def replicas(vid):
    """The volume's public URLs, from the leader (a standby answers 307: ask the other)."""
    if vid not in locations:
        for m in masters:
            status, _, body = get(m, f"/dir/lookup?volumeId={vid}", auth)
            if status == 200:
                locations[vid] = [l["publicUrl"] for l in json.loads(body)["locations"]]
                break
        else:
            sys.exit(f"no master answered a lookup of volume {vid}")
    return locations[vid]
bad, n_blobs, copies = [], 0, 0
for line in open(blobs):
    fid, n = line.split()[:2]
    want = open(f"{blobdir}/{n}", "rb").read()
    urls = replicas(fid.split(",")[0])
    if len(urls) < 2:
        bad.append(f"blob {fid}: {len(urls)} replica(s) {urls}, expected 2 (001)")
    for u in urls:
        status, _, body = get(u, "/" + fid)
        copies += 1
        if status != 200 or body != want:
            bad.append(f"blob {fid} on {u}: HTTP {status}, {len(body)} bytes, "
                       f"{'identical' if body == want else 'DIFFERENT'}")
    n_blobs += 1
n_files = 0
for line in open(files):
    _, path, local = line.split()[:3]
    want = open(local, "rb").read()
    for name, addr in filers.items():
        status, _, body = get(addr, path, auth)
        if status != 200 or body != want:
            bad.append(f"file {path} through {name}: HTTP {status}, {len(body)} bytes")
    n_files += 1
for b in bad[:20]:
    print("  LOST: " + b, file=sys.stderr)
if bad:
    sys.exit(f"{len(bad)} acknowledged blob copies or files missing or different")
print(f"  ok: all {n_blobs} acknowledged blobs read back byte-identical from both of their "
      f"replicas ({copies} copies on {len({u for l in locations.values() for u in l})} volume "
      f"servers), all {n_files} acknowledged files through both filers")
EOF
# And a few through the kelp CLI, which follows the leader across both masters.
n_cli=0
while read -r fid n _; do
    CLI_KEY="$READ_KEY" kelp_host download --use-public-url --master "$MASTER_LIST" "$fid" \
        >"$WORK/got" 2>"$WORK/cli.err" || { tail -n 3 "$WORK/cli.err" >&2; fail "kelp download $fid"; }
    cmp -s "$WORK/got" "$WORK/blobs/$n" || fail "kelp download $fid differs from what was written"
    n_cli=$((n_cli + 1))
done < <(head -n 3 "$BLOBS"; tail -n 3 "$BLOBS")
log "  ok: $n_cli of them (the first and last 3) through kelp download --master <both masters> too"
n_blobs="$(wc -l <"$BLOBS")"
n_files="$(wc -l <"$FILES")"
"${CLIENT[@]}" verify "$BROKERS" ha events --acked "$ACKED" --once \
    || fail "acknowledged records of ha/events do not read back"
# The ERROR lines the brokers logged (not a failure by themselves: see the header).
for b in broker1 broker2; do
    docker logs "$(cid "$b")" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | grep ' ERROR ' >"$WORK/$b.errors" || true
    if [[ -s "$WORK/$b.errors" ]]; then
        log "  $b logged $(wc -l <"$WORK/$b.errors") ERROR line(s), e.g.:"
        sort -k3 "$WORK/$b.errors" | cut -c1-300 | awk '!seen[substr($0, index($0, "ERROR"))]++' | head -n 5 | sed 's/^/      /'
    else
        log "  $b logged no ERROR line"
    fi
done
failed_blobs=$(wc -l <"$WORK/blobs.failed")
failed_files=$(wc -l <"$WORK/files.failed")

echo
echo "Failover times (seconds from the event; writes = the slowest of blobs, files, publishes):"
printf '  docker kill of the leading master:      other master leading +%s, writes acknowledged again +%s\n' "$KILL_ELECTED" "$KILL_RESUMED"
printf '  network disconnect of the leading master: other master leading +%s, cut-off one IsLeader false +%s, writes again +%s\n' "$CUT_ELECTED" "$CUT_STEPPED" "$CUT_RESUMED"
printf '  docker kill of the etcd raft leader and filer1: writes again +%s\n' "$ETCD_RESUMED"
printf '  network disconnect of %s (owning [%s] of %s partitions): %s serving all +%s, durable publishes to every partition +%s; reconnected, it owns a share again +%s after the reconnect\n' \
    "$CUT_B" "$CUT_PARTS" "$PARTS" "$SURV_B" "$B_SERVES" "$B_ACKED" "$B_BACK"
echo "  ($n_blobs blobs, $n_files files, $(wc -l <"$ACKED") durable records acknowledged and verified; $failed_blobs blob and $failed_files file writes refused or failed during the faults, as expected)"
echo
echo "PASS: compose HA deployment ($((SECONDS - T0)) s)"
