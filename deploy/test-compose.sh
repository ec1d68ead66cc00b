#!/usr/bin/env bash
# Runs the Kelp compose deployment for real and checks that nothing acknowledged is lost:
#
#   1. builds the binaries if missing, the offline base image if missing, and the runtime image
#      from the host binaries (deploy/build-image.sh);
#   2. generates the credentials with `kelp cert` (CA, certificate, fid-token key, cluster token,
#      API keys) into a temporary directory, hands them to the services' user as the data dirs
#      are, and brings deploy/compose.yaml up (without Jaeger) with its defaults: TLS, fid
#      tokens, the cluster token and API keys on. Unique project name, every data dir
#      bind-mounted from a temporary directory; waits until every service is healthy (the health
#      check itself speaks https). Every call from the host from here on uses https trusting
#      only the generated CA, and an API key;
#   2b. security is on in the real stack: plain http:// to every service fails, also between
#      containers; a client without a key (or with a bad one) gets 401 from the master, filer,
#      broker and registry, a read key gets 403 on writes; /heartbeat, the filer's /__meta/*,
#      the broker's /admin/flush and replica writes refuse an API key without the cluster
#      token; a volume write without a fid token, with a forged one or with one for another
#      fid is refused, while assign -> write to the publicUrl (127.0.0.1, https) -> open read ->
#      lookup -> delete works; the kelp CLI uploads and downloads with the CA and a key, and
#      fails without either; a host client that does not trust the CA refuses the
#      certificate; every container runs as non-root and holds only the secrets it needs
#      (never the CA's private key);
#   3. seed scenario: create a topic, publish 7 records with durable acks, `restart` the whole
#      stack, read offsets 0..6 back byte-identical with durable_offset 7; no container wrote
#      anything outside its bind mount (`docker diff` is empty);
#   4. `docker kill` the broker, then the volume server holding the data, then the filer; start
#      each again; everything acknowledged reads back, and publishing works again;
#   5. network partitions under a durable-publishing loop: `docker network disconnect` the filer
#      for ~10 s, then both volume servers: no publish is acknowledged while cut off, publishes
#      back up to 503 + Retry-After (the broker's durable timeout is 4 s here), publishing
#      recovers after `docker network connect`, and every acknowledged offset reads back;
#   6. `down` + `up` (containers recreated, data only on the host): everything reads back;
#   7. final check: `find data -name '*.dat' -o -name '*.idx'` lists the volume files on the host;
#      the schema registered with the schema registry right after the first `up` (step 2) is
#      still served, by id and by subject/version, by the recreated registry (read with the
#      read API key, as a Confluent client sends it: HTTP Basic auth).
#
# Always tears down (`down -v`, temp dirs, the test image). Exits 0 with "SKIPPED: no Docker
# engine" only when no Docker engine answers.
#
# env: KELP_COMPOSE (default: docker-compose, else "docker compose"), KELP_PARTITION_SECONDS (10),
#      KELP_BIN_DIR (host binaries, default <repo>/target/debug),
#      KELP_KEEP=1 (leave the stack and data up for inspection; prints how to remove them).
set -euo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$DEPLOY_DIR/.." && pwd)"
PARTITION_SECONDS="${KELP_PARTITION_SECONDS:-10}"
T0=$SECONDS

# Shared with test-compose-ha.sh: log/step/fail, compose_preflight, dc, cid, wait_healthy,
# build_image, make_credentials, prepare_mounts, call/expect and the EXIT trap.
# shellcheck source=deploy/lib-compose.sh
source "$DEPLOY_DIR/lib-compose.sh"
COMPOSE_YAML="$DEPLOY_DIR/compose.yaml"

# ---------------------------------------------------------------------------------------------
# The compose file must parse, with and without the tracing profile (needs no engine).
compose_preflight "" tracing

PROJECT="kelptest$$$(date +%s)"
NET="${PROJECT}_default"
IMAGE="kelp-test:$PROJECT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kelp-compose-test.XXXXXX")"
ACKED="$WORK/acked.jsonl"
# `kelp cert` writes here; compose mounts from here (KELP_SECRETS_DIR, exported below).
SECRETS="$WORK/secrets"
CA="$SECRETS/ca.pem"
# Every host-side call to the broker: https trusting only the generated CA, with the write key.
CLIENT=(python3 "$DEPLOY_DIR/broker_client.py" --ca "$CA" --api-key-file "$SECRETS/write.api-key")
SERVICES=(master volume1 volume2 filer broker registry)
BG_PIDS=()
STACK_UP=0

export DATA_DIR="$WORK/data"
export KELP_SECRETS_DIR="$SECRETS"
export KELP_IMAGE="$IMAGE"
# Ephemeral host ports on 127.0.0.1 only (found with `port`), so parallel runs never collide.
# But for the volume servers: assigns and lookups answer publicUrl 127.0.0.1:KELP_VOLUMEn_PORT,
# where host clients (the kelp CLI) then write, so those are free ports chosen here.
KELP_VOLUME1_PORT="$(free_port)"
KELP_VOLUME2_PORT="$(free_port)"
while [[ "$KELP_VOLUME2_PORT" == "$KELP_VOLUME1_PORT" ]]; do KELP_VOLUME2_PORT="$(free_port)"; done
export KELP_BIND=127.0.0.1 KELP_MASTER_PORT= KELP_VOLUME1_PORT KELP_VOLUME2_PORT \
    KELP_FILER_PORT= KELP_BROKER_PORT= KELP_REGISTRY_PORT= KELP_KAFKA_PORT=
# No Jaeger here (its image cannot be pulled): turn OTLP export off.
export OTEL_EXPORTER_OTLP_ENDPOINT=
# A durable publish that cannot become durable within 4 s (rather than 30 s) is answered
# 503 + Retry-After, so a 10 s partition shows publishes backing up to 503.
export KELP_DURABLE_TIMEOUT_MS=4000
trap compose_cleanup EXIT
trap 'exit 130' INT TERM

broker_addr() {
    local a
    a="$(dc port broker 17777 | tail -n1)"
    [[ "$a" == 127.0.0.1:* ]] || fail "broker port not published on 127.0.0.1 (got '$a')"
    echo "$a"
}

# verify NS TOPIC [extra args]: retried for a while, since right after a restart reads may need
# a heartbeat or two before every volume is known again; fails if still wrong at the end.
verify() {
    local ns=$1 topic=$2 out; shift 2
    local deadline=$((SECONDS + 45))
    while :; do
        if out="$("${CLIENT[@]}" verify "$(broker_addr)" "$ns" "$topic" --acked "$ACKED" "$@" 2>&1)"; then
            echo "$out"
            return 0
        fi
        if (( SECONDS >= deadline )); then
            echo "$out" >&2
            fail "acknowledged records of $ns/$topic do not read back"
        fi
        sleep 2
    done
}

# No container may write outside its bind mount: that is how the original incident lost data.
# `docker diff` also lists the mount points Docker itself created for the compose secrets
# (`A /run/secrets`, `A /run/secrets/tls-cert`, ... and `C /run`): a path that is a mount
# destination, or a directory above one, is left out; anything written beside them is not.
check_no_writes_outside_mounts() {
    local s c d mounts bad=0
    for s in "${SERVICES[@]}"; do
        c="$(cid "$s")"
        mounts="$(docker inspect -f '{{range .Mounts}}{{println .Destination}}{{end}}' "$c")"
        d="$(docker diff "$c" | awk -v mounts="$mounts" '
            BEGIN { n = split(mounts, m, "\n") }
            { p = $2; keep = 1
              for (i = 1; i <= n; i++) if (m[i] != "" && (m[i] == p || index(m[i], p "/") == 1)) keep = 0
              if (keep) print }')"
        if [[ -n "$d" ]]; then
            echo "  $s wrote outside its bind mount:" >&2
            echo "$d" | head -n 20 | sed 's/^/    /' >&2
            bad=1
        fi
    done
    [[ $bad == 0 ]] || fail "a container wrote outside its data mount (docker diff not empty)"
    log "docker diff is empty for ${SERVICES[*]} (but for the secrets' mount points): nothing written outside the bind mounts"
}

# ---------------------------------------------------------------------------------------------
step "build"
build_image

step "credentials: kelp cert (TLS, fid-token key, cluster token, API keys)"
# The certificate must be valid for every compose service name: master, volume2, filer, broker
# and registry are built in, volume1 is not. 127.0.0.1 is built in too (health checks and the
# published ports).
make_credentials --host volume1

step "compose up (project $PROJECT, data in $DATA_DIR, secrets in $SECRETS)"
prepare_mounts
log "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || "${COMPOSE[@]}" version | head -n1)); services run as uid $KELP_UID"
STACK_UP=1
dc up -d >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; fail "compose up"; }
wait_healthy 180
log "all healthy: ${SERVICES[*]} (Jaeger not started: profile tracing)"
BROKER="$(broker_addr)"
log "broker at $BROKER"
REGISTRY_SCHEMA='{"type":"record","name":"ComposeCheck","fields":[{"name":"a","type":"int"}]}'
registry_addr() {
    local a
    a="$(dc port registry 8081 | tail -n1)"
    [[ "$a" == 127.0.0.1:* ]] || fail "registry port not published on 127.0.0.1 (got '$a')"
    echo "$a"
}
# Registered as a Confluent client does it against a secured registry: Basic auth, the write
# API key as the password.
reg_id="$(python3 -c 'import json, sys; print(json.dumps({"schema": sys.argv[1]}))' "$REGISTRY_SCHEMA" \
    | curl -fsS --cacert "$CA" -H @"$WORK/basic-write.hdr" -X POST \
        -H 'Content-Type: application/vnd.schemaregistry.v1+json' --data-binary @- \
        "https://$(registry_addr)/subjects/compose-check-value/versions" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')" \
    || fail "registering a schema with the schema registry"
log "schema registry at $(registry_addr): registered compose-check-value version 1 as id $reg_id"

# ---------------------------------------------------------------------------------------------
step "security: TLS, API keys, fid tokens and the cluster token are on in the compose stack"
# addr SERVICE PORT: where the host reaches a service's published port.
addr() {
    local a
    a="$(dc port "$1" "$2" | tail -n1)"
    [[ "$a" == 127.0.0.1:* ]] || fail "$1 port $2 not published on 127.0.0.1 (got '$a')"
    echo "$a"
}
declare -A PORT_OF=([master]=9333 [volume1]=8080 [volume2]=8080 [filer]=8888 [broker]=17777 [registry]=8081)
declare -A URL_OF=()
for s in "${SERVICES[@]}"; do URL_OF[$s]="https://$(addr "$s" "${PORT_OF[$s]}")"; done
MASTER_URL="${URL_OF[master]}" FILER_URL="${URL_OF[filer]}" BROKER_URL="${URL_OF[broker]}" REGISTRY_URL="${URL_OF[registry]}"

log "every service runs as a non-root user"
for s in "${SERVICES[@]}"; do
    c="$(cid "$s")"
    u="$(docker exec "$c" id -u)"
    [[ "$u" != 0 && "$u" == "$KELP_UID" ]] || fail "$s runs as uid $u (expected $KELP_UID, never 0)"
done
log "  ok: ${SERVICES[*]} run as uid $KELP_UID"

log "each container holds only the secrets it needs, never the CA's private key"
declare -A WANT_SECRETS=(
    [master]="api-keys cluster-token jwt-signing-key tls-ca tls-cert tls-key"
    [volume1]="cluster-token jwt-signing-key tls-ca tls-cert tls-key"
    [volume2]="cluster-token jwt-signing-key tls-ca tls-cert tls-key"
    [filer]="api-keys cluster-token jwt-signing-key tls-ca tls-cert tls-key"
    [broker]="api-keys cluster-token jwt-signing-key tls-ca tls-cert tls-key"
    [registry]="api-keys cluster-token tls-ca tls-cert tls-key"
)
for s in "${SERVICES[@]}"; do
    got="$(docker exec "$(cid "$s")" ls /run/secrets | sort | tr '\n' ' ' | sed 's/ $//')"
    [[ "$got" == "${WANT_SECRETS[$s]}" ]] || fail "$s has secrets '$got', expected '${WANT_SECRETS[$s]}'"
done
log "  ok: as compose.yaml lists them; no container has the CA key, the read-token key or the clients' key files"

log "TLS only: plain http:// to every published port gets no HTTP answer"
for s in "${SERVICES[@]}"; do
    plain="http://${URL_OF[$s]#https://}/healthz"
    got="$(curl -sS -m 10 -o /dev/null -w '%{http_code}' "$plain" 2>"$WORK/curl.err" || true)"
    [[ "$got" == 000 ]] || fail "plain $plain answered HTTP $got"
    log "  ok: $s: plain $plain -> $(tr -d '\n' <"$WORK/curl.err" | cut -c1-100)"
    expect "$s https /healthz (open), certificate verified for 127.0.0.1" 200 - GET "${URL_OF[$s]}/healthz"
done
got="$(curl -sS -m 10 -o /dev/null -w '%{http_code}' "$BROKER_URL/healthz" 2>"$WORK/curl.err" || echo "exit $?")"
grep -qi 'certificate' "$WORK/curl.err" || fail "a client not trusting the generated CA accepted the broker's certificate ($got)"
log "  ok: a client trusting only the system CAs refuses the certificate: $(head -n1 "$WORK/curl.err" | cut -c1-100)"

log "TLS between the containers too: the filer's container, as an intruder inside the network"
FILER_C="$(cid filer)"
for target in master:9333 volume1:8080 volume2:8080 broker:17777 registry:8081; do
    if docker exec "$FILER_C" curl -sS -m 5 -o /dev/null "http://$target/healthz" 2>"$WORK/curl.err"; then
        fail "plain http://$target answered inside the network"
    fi
    docker exec "$FILER_C" curl -fsS -m 5 -o /dev/null --cacert /run/secrets/tls-ca "https://$target/healthz" \
        || fail "https://$target/healthz inside the network (is the certificate valid for ${target%%:*}?)"
done
log "  ok: plain http:// to every service fails inside the network; https verifies for every service name"

log "master: API keys on client routes, the cluster token on /heartbeat"
expect "master /dir/assign without a key" 401 api_key_required GET "$MASTER_URL/dir/assign"
expect "master /dir/assign with an unknown key" 401 bad_api_key GET "$MASTER_URL/dir/assign" -H @"$WORK/bad.hdr"
expect "master /dir/assign with the read key" 403 read_only_api_key GET "$MASTER_URL/dir/assign" -H @"$WORK/read.hdr"
expect "master /cluster/status with the read key" 200 - GET "$MASTER_URL/cluster/status" -H @"$WORK/read.hdr"
HB='{"ip":"10.9.9.9","port":8080,"public_url":"10.9.9.9:8080","max_volume_count":8,"volumes":[]}'
expect "master /heartbeat (a fake volume server) without the cluster token" 401 cluster_token_required \
    POST "$MASTER_URL/heartbeat" -H 'Content-Type: application/json' -d "$HB"
expect "master /heartbeat with the write API key but no cluster token" 401 cluster_token_required \
    POST "$MASTER_URL/heartbeat" -H @"$WORK/write.hdr" -H 'Content-Type: application/json' -d "$HB"
expect "master /heartbeat with a wrong cluster token" 401 bad_cluster_token \
    POST "$MASTER_URL/heartbeat" -H @"$WORK/bad-cluster.hdr" -H 'Content-Type: application/json' -d "$HB"

log "volume servers: fid tokens on writes and deletes, reads open"
expect "master /dir/assign with the write key" 200 - GET "$MASTER_URL/dir/assign" -H @"$WORK/write.hdr"
A1="$(cat "$WORK/body")"
expect "a second assign" 200 - GET "$MASTER_URL/dir/assign" -H @"$WORK/write.hdr"
A2="$(cat "$WORK/body")"
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
FID="$(field "$A1" fid)" AUTH="$(field "$A1" auth)" VOL="$(field "$A1" url)"
AUTH2="$(field "$A2" auth)"
# Host clients write to the publicUrl: the volume server's published port on 127.0.0.1, for
# which the certificate is valid.
VOL_URL="https://$(field "$A1" publicUrl)"
[[ "$VOL_URL" == "${URL_OF[${VOL%%:*}]:-none}" ]] \
    || fail "assign answered url '$VOL' with publicUrl '$VOL_URL', not the published port of a compose volume server"
log "  assigned $FID on $VOL, publicUrl $VOL_URL, with a fid token"
# A token signed with another key, for the right fid (HS256, as the master signs).
FORGED="$(python3 - "$FID" <<'PY'
import base64, hashlib, hmac, json, os, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"fid": sys.argv[1], "exp": int(time.time()) + 60}).encode())
sig = b64(hmac.new(os.urandom(32), f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
PY
)"
head -c 4096 /dev/urandom >"$WORK/blob"
expect "volume write without a fid token" 401 token_required POST "$VOL_URL/$FID" -F "file=@$WORK/blob"
expect "volume write with the write API key instead of a fid token" 401 bad_token \
    POST "$VOL_URL/$FID" -H @"$WORK/write.hdr" -F "file=@$WORK/blob"
expect "volume write with a forged fid token" 401 bad_token \
    POST "$VOL_URL/$FID" -H "Authorization: BEARER $FORGED" -F "file=@$WORK/blob"
expect "volume write with the token of another fid" 403 token_for_another_fid \
    POST "$VOL_URL/$FID" -H "Authorization: BEARER $AUTH2" -F "file=@$WORK/blob"
expect "volume replica write (?type=replicate) with a valid fid token but no cluster token" 401 cluster_token_required \
    POST "$VOL_URL/$FID?type=replicate" -H "Authorization: BEARER $AUTH" -F "file=@$WORK/blob"
expect "volume write with its fid token" 201 - POST "$VOL_URL/$FID" -H "Authorization: BEARER $AUTH" -F "file=@$WORK/blob"
expect "volume read without any credential (reads are open)" 200 - GET "$VOL_URL/$FID"
cmp -s "$WORK/body" "$WORK/blob" || fail "the blob read back differs from the one written"
expect "volume delete without a fid token" 401 token_required DELETE "$VOL_URL/$FID"
expect "master /dir/lookup?fileId without a key" 401 api_key_required GET "$MASTER_URL/dir/lookup?fileId=$FID"
expect "master /dir/lookup?fileId with the read key" 200 - GET "$MASTER_URL/dir/lookup?fileId=$FID" -H @"$WORK/read.hdr"
python3 -c 'import json,sys; sys.exit(1 if json.load(open(sys.argv[1])).get("auth") else 0)' "$WORK/body" \
    || fail "a lookup with the read key handed out a delete token"
log "  ok: a lookup with the read key carries no delete token"
expect "master /dir/lookup?fileId with the write key" 200 - GET "$MASTER_URL/dir/lookup?fileId=$FID" -H @"$WORK/write.hdr"
DAUTH="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["auth"])' "$WORK/body")" \
    || fail "a lookup with the write key carries no delete token"
expect "volume delete with the lookup's fid token" 202 - DELETE "$VOL_URL/$FID" -H "Authorization: BEARER $DAUTH"
expect "volume read of the deleted blob" 404 - GET "$VOL_URL/$FID"

log "the kelp CLI with the CA and the write key (in the filer's container: it writes to the assign's url, volumeN:8080)"
# The key goes in through the environment (`-e KELP_API_KEY` copies it from ours), not argv.
# `env -u`: the container's own KELP_CLUSTER_TOKEN_FILE and KELP_TLS_CA would otherwise be read
# by the CLI too (the cluster token passes every client check): it gets only what is passed.
kelp_in_net() {
    KELP_API_KEY="${CLI_KEY:-}" docker exec -i -e KELP_API_KEY "$FILER_C" \
        env -u KELP_CLUSTER_TOKEN_FILE -u KELP_TLS_CA -u KELP_MASTER kelp "$@"
}
cli_fid="$(CLI_KEY="$WRITE_KEY" kelp_in_net --tls-ca /run/secrets/tls-ca upload --master master:9333 - \
    <"$WORK/blob" 2>"$WORK/cli.err")" || { cat "$WORK/cli.err" >&2; fail "kelp upload with the CA and the write key"; }
cli_fid="$(grep -Eo '[0-9]+,[0-9a-f]+' <<<"$cli_fid" | head -n1)"
[[ -n "$cli_fid" ]] || fail "kelp upload printed no file id"
CLI_KEY="$READ_KEY" kelp_in_net --tls-ca /run/secrets/tls-ca download --master master:9333 "$cli_fid" \
    >"$WORK/blob.cli" 2>"$WORK/cli.err" || { cat "$WORK/cli.err" >&2; fail "kelp download $cli_fid with the read key"; }
cmp -s "$WORK/blob.cli" "$WORK/blob" || fail "kelp download $cli_fid differs from what kelp upload wrote"
log "  ok: kelp upload -> $cli_fid, kelp download with the read key: same bytes"
if kelp_in_net --tls-ca /run/secrets/tls-ca upload --master master:9333 - <"$WORK/blob" >/dev/null 2>"$WORK/cli.err"; then
    fail "kelp upload without an API key succeeded"
fi
log "  ok: kelp upload without an API key fails: $(grep -m1 -o 'api_key_required' "$WORK/cli.err" || head -n1 "$WORK/cli.err" | cut -c1-120)"
if CLI_KEY="$WRITE_KEY" kelp_in_net upload --master master:9333 - <"$WORK/blob" >/dev/null 2>"$WORK/cli.err"; then
    fail "kelp upload over plain http succeeded"
fi
log "  ok: kelp upload without --tls-ca (plain http) fails: $(grep -m1 -Eo 'error sending request[^)]{0,80}' "$WORK/cli.err" | head -n1)"

log "the kelp CLI on the host: it writes to and reads from the volume servers' publicUrl (their published ports)"
host_fid="$(KELP_API_KEY="$WRITE_KEY" env -u KELP_CLUSTER_TOKEN_FILE "$BIN_DIR/kelp" --tls-ca "$CA" upload --use-public-url \
    --master "${MASTER_URL#https://}" - <"$WORK/blob" 2>"$WORK/cli.err")" \
    || { cat "$WORK/cli.err" >&2; fail "kelp upload from the host"; }
host_fid="$(grep -Eo '[0-9]+,[0-9a-f]+' <<<"$host_fid" | head -n1)"
[[ -n "$host_fid" ]] || fail "kelp upload from the host printed no file id"
KELP_API_KEY="$READ_KEY" env -u KELP_CLUSTER_TOKEN_FILE "$BIN_DIR/kelp" --tls-ca "$CA" download --use-public-url \
    --master "${MASTER_URL#https://}" "$host_fid" >"$WORK/blob.host" 2>"$WORK/cli.err" \
    || { cat "$WORK/cli.err" >&2; fail "kelp download $host_fid from the host"; }
cmp -s "$WORK/blob.host" "$WORK/blob" || fail "kelp download $host_fid from the host differs from what was uploaded"
log "  ok: kelp upload -> $host_fid and kelp download from the host, through the published volume ports"

log "filer: API keys on the file API, the cluster token on /__meta/*"
expect "filer GET / without a key" 401 api_key_required GET "$FILER_URL/"
expect "filer GET / with an unknown key" 401 bad_api_key GET "$FILER_URL/" -H @"$WORK/bad.hdr"
expect "filer upload with the read key" 403 read_only_api_key POST "$FILER_URL/security/check.bin" \
    -H @"$WORK/read.hdr" -F "file=@$WORK/blob"
expect "filer upload with the write key" '20[01]' - POST "$FILER_URL/security/check.bin" \
    -H @"$WORK/write.hdr" -F "file=@$WORK/blob"
expect "filer download with the read key" 200 - GET "$FILER_URL/security/check.bin" -H @"$WORK/read.hdr"
cmp -s "$WORK/body" "$WORK/blob" || fail "the file read back from the filer differs from the one written"
expect "filer /__meta/list with the write API key but no cluster token" 401 cluster_token_required \
    GET "$FILER_URL/__meta/list?path=/" -H @"$WORK/write.hdr"

log "broker: API keys on the HTTP API, the cluster token on /admin/flush"
expect "broker GET /topics without a key" 401 api_key_required GET "$BROKER_URL/topics"
expect "broker GET /topics with an unknown key" 401 bad_api_key GET "$BROKER_URL/topics" -H @"$WORK/bad.hdr"
expect "broker GET /topics with the read key" 200 - GET "$BROKER_URL/topics" -H @"$WORK/read.hdr"
expect "broker create topic without a key" 401 api_key_required POST "$BROKER_URL/topics/security/t" \
    -H 'Content-Type: application/json' -d '{"partitions":1}'
expect "broker create topic with the read key" 403 read_only_api_key POST "$BROKER_URL/topics/security/t" \
    -H @"$WORK/read.hdr" -H 'Content-Type: application/json' -d '{"partitions":1}'
expect "broker publish without a key" 401 api_key_required POST "$BROKER_URL/topics/security/t/publish" \
    -H 'Content-Type: application/json' -d '{"records":[{"value":"x","partition":0}]}'
expect "broker /admin/flush with the write API key but no cluster token" 401 cluster_token_required \
    POST "$BROKER_URL/admin/flush" -H @"$WORK/write.hdr"

log "schema registry: API keys, as Bearer or Basic auth"
expect "registry GET /subjects without a key" 401 40101 GET "$REGISTRY_URL/subjects"
expect "registry GET /subjects with an unknown key" 401 40101 GET "$REGISTRY_URL/subjects" -H @"$WORK/bad.hdr"
expect "registry GET /subjects with the read key (Basic auth)" 200 - GET "$REGISTRY_URL/subjects" -H @"$WORK/basic-read.hdr"
expect "registry GET /subjects with the read key (Bearer)" 200 - GET "$REGISTRY_URL/subjects" -H @"$WORK/read.hdr"
expect "registry register with the read key" 403 40301 POST "$REGISTRY_URL/subjects/intruder-value/versions" \
    -H @"$WORK/basic-read.hdr" -H 'Content-Type: application/vnd.schemaregistry.v1+json' -d '{"schema":"\"string\""}'

log "the services say so at start-up"
for s in master filer broker; do
    # (To a file first: `grep -q` would stop reading early, and pipefail would count the SIGPIPE.)
    dc logs --no-color "$s" >"$WORK/svc.log" 2>&1 || true
    grep -q 'tokens, cluster token, API keys and TLS on' "$WORK/svc.log" \
        || fail "$s did not log that tokens, cluster token, API keys and TLS are on"
done
log "  ok: master, filer and broker log 'security: tokens, cluster token, API keys and TLS on'"
if command -v kcat >/dev/null 2>&1; then
    log "the Kafka listener demands TLS and SASL/PLAIN with a write key (kcat -L)"
    kafka="$(dc port broker 9092 | tail -n1)"
    sasl=(-X security.protocol=SASL_SSL -X sasl.mechanisms=PLAIN -X sasl.username=app -X "ssl.ca.location=$CA")
    kcat -L -b "$kafka" -m 10 "${sasl[@]}" -X "sasl.password=$WRITE_KEY" >"$WORK/kcat.out" 2>&1 \
        || { cat "$WORK/kcat.out" >&2; fail "kcat over SASL_SSL with the write key got no metadata"; }
    for way in "plain TCP:-X security.protocol=PLAINTEXT" \
        "TLS without SASL:-X security.protocol=SSL -X ssl.ca.location=$CA" \
        "a wrong key:${sasl[*]} -X sasl.password=not-a-kelp-key-0123456789"; do
        # shellcheck disable=SC2086 # the flags are word-split on purpose
        if kcat -L -b "$kafka" -m 3 ${way#*:} >/dev/null 2>&1; then
            fail "kcat -L with ${way%%:*} got metadata"
        fi
    done
    log "  ok: SASL_SSL with the write key lists the cluster; plain TCP, TLS without SASL and a wrong key do not"
    kcat -L -b "$kafka" -m 10 "${sasl[@]}" -X "sasl.password=$READ_KEY" >"$WORK/kcat.out" 2>&1 \
        || { cat "$WORK/kcat.out" >&2; fail "kcat over SASL_SSL with the read key got no metadata"; }
    if echo refused | kcat -P -b "$kafka" -t compose-read-only "${sasl[@]}" -X "sasl.password=$READ_KEY" \
        -X acks=all >"$WORK/kcat.out" 2>&1 && ! grep -qi authoriz "$WORK/kcat.out"; then
        fail "kcat -P with the read key was not refused: $(head -c 300 "$WORK/kcat.out")"
    fi
    log "  ok: the read key lists the cluster but may not produce: $(grep -m1 -io '[a-z_ ]*authoriz[a-z_ ]*' "$WORK/kcat.out")"
else
    log "(kcat not installed: the Kafka listener's TLS and SASL were not checked here)"
fi

# ---------------------------------------------------------------------------------------------
step "seed scenario: 7 durable records, restart the whole stack, read them back"
"${CLIENT[@]}" create "$BROKER" seed events 1
"${CLIENT[@]}" publish "$BROKER" seed events --acked "$ACKED" --count 7 --prefix seed
dc restart -t 90 >"$WORK/restart.log" 2>&1 || { cat "$WORK/restart.log" >&2; fail "compose restart"; }
wait_healthy 180
log "stack restarted and healthy again"
verify seed events --expect-durable 7
check_no_writes_outside_mounts

# ---------------------------------------------------------------------------------------------
step "docker kill: broker, the volume server holding the data, filer"
kill_and_start() {
    local s=$1 c
    c="$(cid "$s")"
    docker kill "$c" >/dev/null
    log "killed $s ($(docker inspect -f '{{.State.Status}} exit={{.State.ExitCode}}' "$c"))"
    docker start "$c" >/dev/null
    wait_healthy 120
    log "$s started again and healthy"
}
kill_and_start broker
verify seed events --expect-durable 7
"${CLIENT[@]}" publish "$(broker_addr)" seed events --acked "$ACKED" --count 3 --prefix after-broker-kill

holder="$(cd "$DATA_DIR" && find volume1 volume2 -name '*.dat' -size +8c 2>/dev/null | head -n1 | cut -d/ -f1)"
kill_and_start "${holder:-volume1}"
verify seed events --expect-durable 10
"${CLIENT[@]}" publish "$(broker_addr)" seed events --acked "$ACKED" --count 2 --prefix after-volume-kill

kill_and_start filer
verify seed events --expect-durable 12
"${CLIENT[@]}" publish "$(broker_addr)" seed events --acked "$ACKED" --count 2 --prefix after-filer-kill
verify seed events --expect-durable 14

# ---------------------------------------------------------------------------------------------
"${CLIENT[@]}" create "$(broker_addr)" chaos events 2

# partition NAME SERVICE...: cut SERVICES off the network under a durable-publishing loop.
partition() {
    local name=$1; shift
    local stats="$WORK/loop-$name.json" stop="$WORK/stop-$name" s c t_cut t_heal healed_at acked_at_heal n
    step "network partition: $* cut off for ${PARTITION_SECONDS}s under durable publishing"
    BROKER="$(broker_addr)"
    "${CLIENT[@]}" loop "$BROKER" chaos events --acked "$ACKED" --stats "$stats" --stop "$stop" \
        --prefix "$name" --partitions 2 &
    BG_PIDS=($!)
    sleep 3
    log "before: $("${CLIENT[@]}" stats "$stats")"
    for s in "$@"; do docker network disconnect -f "$NET" "$(cid "$s")"; done
    t_cut="$(date +%s.%N)"   # every one of them is cut off from here ...
    log "disconnected $* from $NET"
    sleep "$PARTITION_SECONDS"
    log "during: $("${CLIENT[@]}" stats "$stats")"
    t_heal="$(date +%s.%N)"  # ... to here, when the first is reconnected
    for s in "$@"; do docker network connect --alias "$s" "$NET" "$(cid "$s")"; done
    healed_at=$SECONDS
    log "reconnected $*"
    acked_at_heal="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["acked"])' "$stats")"
    local deadline=$((SECONDS + 90))
    while :; do
        n="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["acked"])' "$stats")"
        (( n > acked_at_heal + 3 )) && break
        (( SECONDS < deadline )) || fail "publishing did not recover within 90 s after reconnecting $*"
        sleep 1
    done
    log "publishing recovered: $((n - acked_at_heal)) acknowledged within $((SECONDS - healed_at)) s of reconnecting"
    touch "$stop"
    wait "${BG_PIDS[0]}" || fail "the publishing loop failed"
    BG_PIDS=()
    local final
    final="$("${CLIENT[@]}" stats "$stats")"
    log "after: $final"
    python3 - "$final" <<'EOF' || fail "publishes during the partition were not answered 200 or 503 + Retry-After"
import json, sys
s = json.loads(sys.argv[1])
print(f"  {s['acked']} acknowledged, {s['retry_after_503']} x 503 + Retry-After "
      f"(e.g. {s['retry_after_values'][:3]}), {s['timeouts']} client timeouts (45 s), "
      f"max ack latency {s['max_ack_latency_s']} s")
if s["bad"] or s["conn_errors"]:
    print(f"  unexpected answers: {s['bad']} (samples: {s['bad_samples']}), "
          f"{s['conn_errors']} broker connection errors", file=sys.stderr)
    sys.exit(1)
if s["retry_after_503"] == 0:
    print("  no publish backed up to 503 + Retry-After while cut off", file=sys.stderr)
    sys.exit(1)
EOF
    # Nothing can be durable while the filer or every volume server is cut off, so no publish may
    # be acknowledged between the last disconnect and the first reconnect (1 s of slack for
    # requests already committing at the cut).
    n="$("${CLIENT[@]}" acks-between chaos events --acked "$ACKED" \
        "$(python3 -c "print($t_cut + 1.0)")" "$t_heal")"
    [[ "$n" == 0 ]] || fail "$n publish(es) acknowledged as durable while cut off ($*)"
    log "no publish was acknowledged during the cut ($*)"
    verify chaos events
}
partition filer filer
partition volumes volume1 volume2
verify seed events --expect-durable 14

# ---------------------------------------------------------------------------------------------
step "recreate every container (down, up): the data lives only in the bind mounts"
if ! dc down -t 90 >"$WORK/down.log" 2>&1; then
    # Docker 20.10 can keep a stale endpoint on a network after `network disconnect -f` and
    # `connect` (the partition steps above), and then refuses to remove the network although
    # every container is gone. What this step proves needs the containers gone, not the
    # network: go on with the network kept (compose reuses it), and say so.
    if grep -q "error while removing network: .* has active endpoints" "$WORK/down.log" &&
        [[ -z "$(dc ps -q 2>/dev/null)" ]]; then
        log "every container removed; docker kept network $NET (a stale endpoint left by the partition steps)"
    else
        cat "$WORK/down.log" >&2
        fail "compose down"
    fi
fi
log "containers removed; host data dirs: $(cd "$DATA_DIR" && echo *)"
dc up -d >"$WORK/up2.log" 2>&1 || { cat "$WORK/up2.log" >&2; fail "compose up after down"; }
wait_healthy 180
log "new containers healthy"
verify seed events --expect-durable 14
verify chaos events
check_no_writes_outside_mounts

# ---------------------------------------------------------------------------------------------
step "final check: volume files on the host (cd \$DATA_DIR/.. && find data -name '*.dat' -o -name '*.idx')"
files="$(cd "$WORK" && find data -name '*.dat' -o -name '*.idx' | sort)"
echo "$files"
grep -Eq '^data/volume[12]/.*\.dat$' <<<"$files" || fail "no .dat file under data/volume1 or data/volume2"
for path in "schemas/ids/$reg_id" "subjects/compose-check-value/versions/1"; do
    curl -fsS --cacert "$CA" -H @"$WORK/basic-read.hdr" "https://$(registry_addr)/$path" | python3 -c '
import json, sys
got = json.load(sys.stdin)
want = json.loads(sys.argv[1])
sys.exit(0 if json.loads(got["schema"]) == want else 1)' "$REGISTRY_SCHEMA" \
        || fail "the schema registry lost $path across the restarts"
done
log "the schema registry still serves id $reg_id and compose-check-value/1"
grep -Eq '^data/volume[12]/.*\.idx$' <<<"$files" || fail "no .idx file under data/volume1 or data/volume2"
echo
echo "PASS: compose deployment ($((SECONDS - T0)) s)"
