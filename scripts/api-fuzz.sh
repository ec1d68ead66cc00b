#!/usr/bin/env bash
# Property-based API fuzzing (issue 7): starts the real master, volume server, filer, broker and
# schema registry on ephemeral ports, then runs schemathesis against each service's own OpenAPI document
# (`GET /openapi.json`). Fails on any 5xx the document does not allow (see
# scripts/api-fuzz.toml), any response that does not match the document (status code, content
# type, headers, body schema), a panic in a service's log, or a service that died.
#
# Build first: `cargo build --workspace --bins`. Binaries come from `E2E_BIN_DIR`, else
# `${CARGO_TARGET_DIR:-target}/debug`.
#
# Knobs (environment):
#   API_FUZZ_MAX_EXAMPLES  test cases per operation and phase (default 30)
#   API_FUZZ_MAX_TIME      seconds per service; bounds each schemathesis run (default 60)
#   API_FUZZ_SEED          seed, to replay a run (default: random, printed)
#   API_FUZZ_SERVICES      which services to fuzz, in order (default "registry broker filer
#                          volume master": the registry needs a healthy broker, the broker and
#                          the filer need a healthy cluster, and the broker an untouched
#                          /topics/ in the filer, while fuzzing the filer
#                          writes anywhere in its namespace, fuzzing the volume server
#                          allocates volumes and fuzzing the master registers made-up servers)
#   API_FUZZ_KEEP=1        keep the work dir (logs, data, reports) instead of deleting it
#   API_FUZZ_ARGS          extra `schemathesis run` arguments (e.g. "--checks all" to explore)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${E2E_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}
MAX_EXAMPLES=${API_FUZZ_MAX_EXAMPLES:-30}
MAX_TIME=${API_FUZZ_MAX_TIME:-60}
SEED=${API_FUZZ_SEED:-$RANDOM$RANDOM}
SERVICES=${API_FUZZ_SERVICES:-registry broker filer volume master}
CONFIG=$PWD/scripts/api-fuzz.toml

for b in kelp-master kelp-volume kelp-filer kelp-broker kelp-registry; do
    if [[ ! -x $BIN/$b ]]; then
        echo "api-fuzz: $BIN/$b not found: run \`cargo build --workspace --bins\` first" >&2
        exit 2
    fi
done
# The CLI and config used here are schemathesis 4.x's (3.x spelled them differently).
if ! python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("schemathesis").split(".")[0] != "4")' 2>/dev/null \
    || ! command -v schemathesis >/dev/null 2>&1; then
    echo "api-fuzz: installing schemathesis 4.x"
    python3 -m pip install --quiet 'schemathesis>=4.32,<5'
fi
echo "api-fuzz: $(schemathesis --version), seed $SEED, $MAX_EXAMPLES examples, ${MAX_TIME}s per service"

WORK=$(mktemp -d -t kelp-api-fuzz-XXXXXX)
PIDS=()
NAMES=()

# Stops the services in reverse start order, so the broker flushes to a live cluster.
cleanup() {
    local status=$? i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[$i]}" 2>/dev/null || true
        wait "${PIDS[$i]}" 2>/dev/null || true
    done
    if [[ $status -ne 0 || ${API_FUZZ_KEEP:-0} == 1 ]]; then
        echo "api-fuzz: logs, data and reports kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT

# schemathesis has no serializer for the broker's binary publish batch: send the generated
# bytes as they are, like application/octet-stream.
cat >"$WORK/hooks.py" <<'HOOKS'
import schemathesis

schemathesis.serializer.alias("application/x-kelp-batch", "application/octet-stream")
HOOKS
export SCHEMATHESIS_HOOKS=$WORK/hooks.py

# start NAME BINARY ARGS...: starts a service on port 0 with its own dir and log, waits for
# its addrs.json and /readyz, and sets ADDR to its address.
start() {
    local name=$1 bin=$2
    shift 2
    mkdir -p "$WORK/$name"
    OTEL_SDK_DISABLED=true RUST_LOG=${RUST_LOG:-info} NO_COLOR=1 \
        "$BIN/$bin" --dir "$WORK/$name" --port 0 "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    NAMES+=("$name")
    local pid=$! addr=""
    for _ in $(seq 1 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "api-fuzz: $name exited during start-up:" >&2
            tail -n 30 "$WORK/$name.log" >&2
            return 1
        fi
        if [[ -s $WORK/$name/addrs.json ]]; then
            addr=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' \
                "$WORK/$name/addrs.json" 2>/dev/null || true)
            if [[ -n $addr ]] && curl -fsS -o /dev/null "http://$addr/readyz"; then
                ADDR=$addr
                return 0
            fi
        fi
        sleep 0.1
    done
    echo "api-fuzz: $name did not become ready within 30 s" >&2
    return 1
}

start master kelp-master --pulse-ms 300
MASTER=$ADDR
start volume kelp-volume --master "$MASTER" --heartbeat-interval-ms 200
VOLUME=$ADDR
# A small upload limit also bounds the files the metadata API may declare, so a GET of a
# fuzzed sparse entry reads at most 16 MiB of zeros.
start filer kelp-filer --master "$MASTER" --max-upload-mb 16
FILER=$ADDR
# Fast flushes, and durable publishes (and /admin/flush) answered or refused well within the
# request timeout; a short shutdown flush keeps the clean-up bounded.
start broker kelp-broker --master "$MASTER" --filer "$FILER" --flush-interval-ms 100 \
    --durable-timeout-ms 5000 --shutdown-flush-timeout-ms 5000 --kafka-port 0
BROKER=$ADDR
start registry kelp-registry --broker "$BROKER"
REGISTRY=$ADDR
echo "api-fuzz: master $MASTER, volume $VOLUME, filer $FILER, broker $BROKER, registry $REGISTRY (work dir $WORK)"

# Grow volume 1 now, so the documents' example file id (1,01637037d6) names a real volume and
# the blob routes are exercised past the volume lookup.
for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "http://$MASTER/dir/assign"; then
        break
    fi
    sleep 0.1
done
curl -fsS "http://$MASTER/dir/lookup?volumeId=1" >/dev/null

# The broker document's example topic (fuzz/events, 2 partitions), with durable records in both
# partitions and a committed group offset, so the examples reach past the topic lookup.
curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' -d '{"partitions":2}' \
    "http://$BROKER/topics/fuzz/events"
for p in 0 1; do
    curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' \
        -d "{\"records\":[{\"value\":\"a\",\"partition\":$p},{\"value\":\"b\",\"partition\":$p},{\"value_b64\":\"/w==\",\"key\":\"k\",\"partition\":$p}]}" \
        "http://$BROKER/topics/fuzz/events/publish"
done
curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/json' \
    -d '{"topic":"fuzz/events","partition":0,"offset":1}' "http://$BROKER/groups/fuzz-group/offsets"

# The registry document's example subject (fuzz-value) with versions 1 and 2 (id 1 and 2), so
# the examples reach past the subject lookup.
for fields in '[{"name":"a","type":"int"}]' \
    '[{"name":"a","type":"int"},{"name":"b","type":"string","default":""}]'; do
    body=$(python3 -c 'import json, sys; print(json.dumps({"schema": json.dumps({"type": "record", "name": "R", "fields": json.loads(sys.argv[1])})}))' "$fields")
    curl -fsS -o /dev/null -X POST -H 'Content-Type: application/vnd.schemaregistry.v1+json' \
        -d "$body" "http://$REGISTRY/subjects/fuzz-value/versions"
done

failed=()
for svc in $SERVICES; do
    case $svc in
        master) addr=$MASTER ;;
        volume) addr=$VOLUME ;;
        filer) addr=$FILER ;;
        broker) addr=$BROKER ;;
        registry) addr=$REGISTRY ;;
        *)
            echo "api-fuzz: unknown service $svc" >&2
            exit 2
            ;;
    esac
    echo
    echo "=== api-fuzz: kelp-$svc ($addr) ==="
    start_s=$SECONDS
    # One worker: with several, hypothesis's lambda descriptions call ast.parse from threads,
    # which CPython before 3.11.9/3.12.3 can fail with "AST constructor recursion depth
    # mismatch" (cpython#106905), a tool error that is not a finding.
    if ! schemathesis --config-file "$CONFIG" --no-color run "http://$addr/openapi.json" \
        --max-examples "$MAX_EXAMPLES" \
        --max-time "$MAX_TIME" \
        --seed "$SEED" \
        --request-timeout 10 \
        --workers 1 \
        --report junit --report-dir "$WORK/reports" \
        --report-junit-path "$WORK/reports/$svc.xml" \
        ${API_FUZZ_ARGS:-}; then
        failed+=("$svc")
    fi
    echo "=== api-fuzz: kelp-$svc done in $((SECONDS - start_s)) s ==="
done

for i in "${!PIDS[@]}"; do
    if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
        echo "api-fuzz: ${NAMES[$i]} died during the run:" >&2
        tail -n 30 "$WORK/${NAMES[$i]}.log" >&2
        failed+=("${NAMES[$i]}-died")
    fi
    if grep -aq "panicked" "$WORK/${NAMES[$i]}.log"; then
        grep -a -m 5 "panicked" "$WORK/${NAMES[$i]}.log" >&2
        echo "api-fuzz: ${NAMES[$i]} panicked $(grep -ac "panicked at" "$WORK/${NAMES[$i]}.log") times" \
            "(first ones above; log: $WORK/${NAMES[$i]}.log)" >&2
        failed+=("${NAMES[$i]}-panicked")
    fi
done

if [[ ${#failed[@]} -ne 0 ]]; then
    echo "api-fuzz: FAILED: ${failed[*]} (seed $SEED)" >&2
    exit 1
fi
echo "api-fuzz: all services passed (seed $SEED) in $SECONDS s"
