#!/usr/bin/env bash
# Runs the Kelp compose deployment for real and checks that nothing acknowledged is lost:
#
#   1. builds the binaries if missing, the offline base image if missing, and the runtime image
#      from the host binaries (deploy/build-image.sh);
#   2. brings deploy/compose.yaml up (without Jaeger) under a unique project name, with every data
#      dir bind-mounted from a temporary directory, and waits until every service is healthy;
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
#      still served, by id and by subject/version, by the recreated registry.
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
CLIENT=(python3 "$DEPLOY_DIR/broker_client.py")
PARTITION_SECONDS="${KELP_PARTITION_SECONDS:-10}"
T0=$SECONDS

log() { printf '[%s +%3ds] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - T0))" "$*"; }
step() { printf '\n[%s +%3ds] === %s\n' "$(date +%H:%M:%S)" "$((SECONDS - T0))" "$*"; }

# ---------------------------------------------------------------------------------------------
COMPOSE=()
if [[ -n "${KELP_COMPOSE:-}" ]]; then
    read -r -a COMPOSE <<<"$KELP_COMPOSE"
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
fi
# The compose file must parse, with and without the tracing profile (needs no engine).
if [[ ${#COMPOSE[@]} -gt 0 ]]; then
    for profile in "" tracing; do
        "${COMPOSE[@]}" -f "$DEPLOY_DIR/compose.yaml" ${profile:+--profile "$profile"} config -q \
            || { echo "FAIL: deploy/compose.yaml does not validate (profile '${profile}')" >&2; exit 1; }
    done
fi
if ! docker info >/dev/null 2>&1; then
    echo "SKIPPED: no Docker engine (docker info failed); the compose deployment was NOT tested"
    exit 0
fi
if [[ ${#COMPOSE[@]} == 0 ]]; then
    echo "FAIL: a Docker engine answers but neither docker-compose nor 'docker compose' is installed" >&2
    exit 1
fi
for tool in curl python3; do
    command -v "$tool" >/dev/null || { echo "FAIL: $tool is required" >&2; exit 1; }
done

PROJECT="kelptest$$$(date +%s)"
NET="${PROJECT}_default"
IMAGE="kelp-test:$PROJECT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kelp-compose-test.XXXXXX")"
ACKED="$WORK/acked.jsonl"
SERVICES=(master volume1 volume2 filer broker registry)
LOOP_PID=""
STACK_UP=0

export DATA_DIR="$WORK/data"
export KELP_IMAGE="$IMAGE"
# Ephemeral host ports on 127.0.0.1 only (found with `port`), so parallel runs never collide.
export KELP_BIND=127.0.0.1 KELP_MASTER_PORT= KELP_VOLUME1_PORT= KELP_VOLUME2_PORT= \
    KELP_FILER_PORT= KELP_BROKER_PORT= KELP_REGISTRY_PORT= KELP_KAFKA_PORT=
# No Jaeger here (its image cannot be pulled): turn OTLP export off.
export OTEL_EXPORTER_OTLP_ENDPOINT=
# A durable publish that cannot become durable within 4 s (rather than 30 s) is answered
# 503 + Retry-After, so a 10 s partition shows publishes backing up to 503.
export KELP_DURABLE_TIMEOUT_MS=4000
unset COMPOSE_PROFILES COMPOSE_FILE COMPOSE_PROJECT_NAME || true

COMPOSE_OPTS=()
if "${COMPOSE[@]}" --ansi never version >/dev/null 2>&1; then COMPOSE_OPTS=(--ansi never); fi
dc() { "${COMPOSE[@]}" ${COMPOSE_OPTS[@]+"${COMPOSE_OPTS[@]}"} -p "$PROJECT" -f "$DEPLOY_DIR/compose.yaml" "$@"; }

dump_logs() {
    [[ "$STACK_UP" == 1 ]] || return 0
    echo "---- docker-compose ps" >&2
    dc ps >&2 || true
    for s in "${SERVICES[@]}"; do
        echo "---- last log lines of $s" >&2
        dc logs --no-color --tail=40 "$s" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-400 >&2 || true
    done
}

cleanup() {
    local rc=$?
    set +e
    if [[ -n "$LOOP_PID" ]]; then kill "$LOOP_PID" 2>/dev/null; wait "$LOOP_PID" 2>/dev/null; fi
    if [[ $rc != 0 ]]; then
        echo >&2
        echo "FAIL (exit $rc) after $((SECONDS - T0)) s; diagnostics follow" >&2
        dump_logs
    fi
    if [[ "${KELP_KEEP:-0}" == 1 ]]; then
        echo "KELP_KEEP=1: left project $PROJECT and $WORK; remove with:" >&2
        echo "  DATA_DIR=$DATA_DIR KELP_IMAGE=$IMAGE ${COMPOSE[*]} -p $PROJECT -f $DEPLOY_DIR/compose.yaml down -v; rm -rf $WORK; docker rmi $IMAGE" >&2
        exit $rc
    fi
    if [[ "$STACK_UP" == 1 ]]; then
        dc down -v --remove-orphans -t 10 >/dev/null 2>&1
        # A disconnected container can keep the network alive: make sure it is gone.
        docker network rm "$NET" >/dev/null 2>&1
    fi
    docker image rm "$IMAGE" >/dev/null 2>&1
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }

cid() { dc ps -q "$1"; }

# Waits until every service's container is running and healthy.
wait_healthy() {
    local deadline=$((SECONDS + ${1:-120})) s c st pending
    while :; do
        pending=()
        for s in "${SERVICES[@]}"; do
            c="$(cid "$s")"
            if [[ -z "$c" ]]; then pending+=("$s:absent"); continue; fi
            st="$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c")"
            [[ "$st" == running/healthy ]] || pending+=("$s:$st")
        done
        [[ ${#pending[@]} == 0 ]] && return 0
        if (( SECONDS >= deadline )); then fail "services not healthy in time: ${pending[*]}"; fi
        sleep 1
    done
}

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
check_no_writes_outside_mounts() {
    local s c d bad=0
    for s in "${SERVICES[@]}"; do
        c="$(cid "$s")"
        d="$(docker diff "$c")"
        if [[ -n "$d" ]]; then
            echo "  $s wrote outside its bind mount:" >&2
            echo "$d" | head -n 20 | sed 's/^/    /' >&2
            bad=1
        fi
    done
    [[ $bad == 0 ]] || fail "a container wrote outside its data mount (docker diff not empty)"
    log "docker diff is empty for ${SERVICES[*]}: nothing written outside the bind mounts"
}

# ---------------------------------------------------------------------------------------------
step "build"
BINS=(kelp-master kelp-volume kelp-filer kelp-broker kelp-registry kelp)
export KELP_BIN_DIR="${KELP_BIN_DIR:-${CARGO_TARGET_DIR:-$REPO_DIR/target}/debug}"   # read by build-image.sh too
BIN_DIR="$KELP_BIN_DIR"
# (A concurrent cargo build replaces binaries while linking: look again before building.)
for attempt in 1 2 3; do
    missing=()
    for b in "${BINS[@]}"; do [[ -x "$BIN_DIR/$b" ]] || missing+=("$b"); done
    [[ ${#missing[@]} == 0 ]] && break
    sleep 3
done
if [[ ${#missing[@]} -gt 0 ]]; then
    log "binaries missing in $BIN_DIR (${missing[*]}): cargo build --workspace --bins"
    (cd "$REPO_DIR" && cargo build --workspace --bins)
fi
"$DEPLOY_DIR/build-image.sh" "$IMAGE"

step "compose up (project $PROJECT, data in $DATA_DIR)"
mkdir -p "${SERVICES[@]/#/$DATA_DIR/}"
if [[ "$(id -u)" == 0 ]]; then
    # Root on the host: hand the bind-mounted dirs to the image's non-root user.
    export KELP_UID=10001 KELP_GID=10001
    chown -R 10001:10001 "$DATA_DIR"
else
    # Run the containers as the invoking (non-root) user, who owns the dirs.
    export KELP_UID="$(id -u)" KELP_GID="$(id -g)"
fi
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
reg_id="$(python3 -c 'import json, sys; print(json.dumps({"schema": sys.argv[1]}))' "$REGISTRY_SCHEMA" \
    | curl -fsS -X POST -H 'Content-Type: application/vnd.schemaregistry.v1+json' --data-binary @- \
        "http://$(registry_addr)/subjects/compose-check-value/versions" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')" \
    || fail "registering a schema with the schema registry"
log "schema registry at $(registry_addr): registered compose-check-value version 1 as id $reg_id"

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
    LOOP_PID=$!
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
    wait "$LOOP_PID" || fail "the publishing loop failed"
    LOOP_PID=""
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
    curl -fsS "http://$(registry_addr)/$path" | python3 -c '
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
