# Helpers shared by the compose deployment tests (deploy/test-compose.sh, the single-master
# stack of compose.yaml, and deploy/test-compose-ha.sh, the HA stack of compose-ha.yaml).
# Sourced, not run. Nothing here starts anything by itself.
#
# The sourcing script sets, before it calls them:
#   DEPLOY_DIR, REPO_DIR  this directory and the repository root
#   T0                    $SECONDS at its start (log lines show the time since)
#   COMPOSE_YAML          the compose file it runs
#   PROJECT, NET          the unique project name and its network (${PROJECT}_default)
#   IMAGE                 the Kelp image the test builds from the host binaries (removed at the end)
#   WORK, SECRETS, CA     its temporary directory, `kelp cert`'s output in it, the CA file
#   SERVICES              array: the services to wait for and to dump the logs of on failure
#   STACK_UP              0, set to 1 right before `up` (what the cleanup tears down)
#   BG_PIDS               array of background jobs (writer loops) to stop in the cleanup
# and calls `compose_preflight PROFILE...` first, `trap compose_cleanup EXIT` once WORK exists.

log() { printf '[%s +%3ds] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - T0))" "$*"; }
step() { printf '\n[%s +%3ds] === %s\n' "$(date +%H:%M:%S)" "$((SECONDS - T0))" "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# compose_preflight [PROFILE...]: finds docker-compose (else `docker compose`; KELP_COMPOSE
# overrides) into COMPOSE and COMPOSE_OPTS, validates COMPOSE_YAML (needs no engine; once per
# PROFILE, "" meaning none), then exits 0 with "SKIPPED: no Docker engine" when no engine
# answers, and fails when one answers but compose, curl or python3 is missing.
compose_preflight() {
    local profile
    COMPOSE=()
    if [[ -n "${KELP_COMPOSE:-}" ]]; then
        read -r -a COMPOSE <<<"$KELP_COMPOSE"
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    elif docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    fi
    if [[ ${#COMPOSE[@]} -gt 0 ]]; then
        for profile in "$@"; do
            "${COMPOSE[@]}" -f "$COMPOSE_YAML" ${profile:+--profile "$profile"} config -q \
                || { echo "FAIL: deploy/$(basename "$COMPOSE_YAML") does not validate (profile '${profile}')" >&2; exit 1; }
        done
    fi
    if ! docker info >/dev/null 2>&1; then
        echo "SKIPPED: no Docker engine (docker info failed); the compose deployment ($(basename "$COMPOSE_YAML")) was NOT tested"
        exit 0
    fi
    if [[ ${#COMPOSE[@]} == 0 ]]; then
        echo "FAIL: a Docker engine answers but neither docker-compose nor 'docker compose' is installed" >&2
        exit 1
    fi
    local tool
    for tool in curl python3; do
        command -v "$tool" >/dev/null || { echo "FAIL: $tool is required" >&2; exit 1; }
    done
    COMPOSE_OPTS=()
    if "${COMPOSE[@]}" --ansi never version >/dev/null 2>&1; then COMPOSE_OPTS=(--ansi never); fi
    # Nothing from the caller's environment may add services or files to the project.
    unset COMPOSE_PROFILES COMPOSE_FILE COMPOSE_PROJECT_NAME || true
}

dc() { "${COMPOSE[@]}" ${COMPOSE_OPTS[@]+"${COMPOSE_OPTS[@]}"} -p "$PROJECT" -f "$COMPOSE_YAML" "$@"; }

# cid SERVICE: its container (running or not), from the labels compose puts on it: one `docker
# ps`, not a compose invocation (which takes most of a second on a small machine).
cid() {
    docker ps -aq --no-trunc --filter "label=com.docker.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$1" --filter "label=com.docker.compose.oneoff=False" | head -n1
}

# A free TCP port on 127.0.0.1 (for host ports that must not change across restarts).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# free_ports N: N distinct free ports, one a line.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print("\n".join(str(s.getsockname()[1]) for s in socks))
EOF
}

dump_logs() {
    [[ "$STACK_UP" == 1 ]] || return 0
    local s
    echo "---- docker-compose ps" >&2
    dc ps >&2 || true
    for s in "${SERVICES[@]}"; do
        echo "---- last log lines of $s" >&2
        dc logs --no-color --tail=40 "$s" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-400 >&2 || true
    done
}

# The EXIT trap: stops the background jobs, dumps diagnostics on failure, and removes the
# stack (`down -v`, and its network, which a disconnected container can keep alive), the test
# image and WORK; with KELP_KEEP=1 it leaves them and says how to remove them.
compose_cleanup() {
    local rc=$? p
    set +e
    for p in ${BG_PIDS[@]+"${BG_PIDS[@]}"}; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    if [[ $rc != 0 ]]; then
        echo >&2
        echo "FAIL (exit $rc) after $((SECONDS - T0)) s; diagnostics follow" >&2
        dump_logs
    fi
    if [[ "${KELP_KEEP:-0}" == 1 ]]; then
        echo "KELP_KEEP=1: left project $PROJECT and $WORK; remove with:" >&2
        echo "  $(compose_env_line) ${COMPOSE[*]} -p $PROJECT -f $COMPOSE_YAML down -v; rm -rf $WORK; docker rmi $IMAGE" >&2
        exit $rc
    fi
    if [[ "$STACK_UP" == 1 ]]; then
        dc down -v --remove-orphans -t 10 >/dev/null 2>&1
        docker network rm "$NET" >/dev/null 2>&1
    fi
    docker image rm "$IMAGE" >/dev/null 2>&1
    rm -rf "$WORK"
    exit $rc
}
compose_env_line() { echo "DATA_DIR=$DATA_DIR KELP_SECRETS_DIR=$KELP_SECRETS_DIR KELP_IMAGE=$IMAGE"; }

# wait_healthy [SECONDS]: until every service's container is running and healthy. A wait of
# more than 10 s is logged with what it waited for last.
wait_healthy() {
    local start=$SECONDS deadline=$((SECONDS + ${1:-120})) s st pending last=""
    local -A state
    while :; do
        # Every container of the project, with its service and state, in two docker calls.
        state=()
        while read -r s st; do
            [[ -n "$s" ]] && state[$s]=$st
        done < <(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
                    --filter "label=com.docker.compose.oneoff=False" \
                 | xargs -r docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}')
        pending=()
        for s in "${SERVICES[@]}"; do
            st="${state[$s]:-absent}"
            [[ "$st" == running/healthy ]] || pending+=("$s:$st")
        done
        if [[ ${#pending[@]} == 0 ]]; then
            (( SECONDS - start <= 10 )) || log "  (healthy after $((SECONDS - start)) s; the last to be: $last)"
            return 0
        fi
        if (( SECONDS >= deadline )); then fail "services not healthy in time: ${pending[*]}"; fi
        last="${pending[*]}"
        sleep 1
    done
}

# build_image: the binaries (cargo build only if one is missing), then IMAGE from them over the
# offline base image (deploy/build-image.sh). Sets BIN_DIR, exports KELP_BIN_DIR.
build_image() {
    local attempt b missing=()
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
}

# make_credentials [kelp cert args...]: `kelp cert --out SECRETS ...`, then curl header files in
# WORK (`-H @file`: the keys never appear on a command line, `ps`): write.hdr, read.hdr,
# bad.hdr (an unknown key), basic-write.hdr / basic-read.hdr (HTTP Basic, as Confluent clients
# send the key), bad-cluster.hdr (a wrong cluster token). Sets WRITE_KEY and READ_KEY.
make_credentials() {
    "$BIN_DIR/kelp" cert --out "$SECRETS" "$@" >"$WORK/cert.log" 2>&1 \
        || { cat "$WORK/cert.log" >&2; fail "kelp cert"; }
    WRITE_KEY="$(cat "$SECRETS/write.api-key")"
    READ_KEY="$(cat "$SECRETS/read.api-key")"
    local saved_umask
    saved_umask="$(umask)"
    umask 077
    printf 'Authorization: Bearer %s\n' "$WRITE_KEY" >"$WORK/write.hdr"
    printf 'Authorization: Bearer %s\n' "$READ_KEY" >"$WORK/read.hdr"
    printf 'Authorization: Bearer %s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$WORK/bad.hdr"
    printf 'Authorization: Basic %s\n' "$(printf 'compose-test:%s' "$WRITE_KEY" | base64 -w0)" >"$WORK/basic-write.hdr"
    printf 'Authorization: Basic %s\n' "$(printf 'compose-test:%s' "$READ_KEY" | base64 -w0)" >"$WORK/basic-read.hdr"
    printf 'x-kelp-cluster-token: %s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$WORK/bad-cluster.hdr"
    umask "$saved_umask"
    log "wrote $(cd "$SECRETS" && echo *) to $SECRETS"
}

# prepare_mounts: a data dir per service under DATA_DIR, handed with the credential files the
# services read to the user they run as (KELP_UID, exported), as compose.yaml's header says;
# then checks that every key file is mode 0600 for its owner and none is world-readable.
MOUNTED_SECRETS=(cert.pem key.pem ca.pem cluster.token jwt-signing.key api-keys)
prepare_mounts() {
    local f want mode
    mkdir -p "${SERVICES[@]/#/$DATA_DIR/}"
    if [[ "$(id -u)" == 0 ]]; then
        # Root on the host: the image's non-root user gets the bind-mounted dirs and the files
        # it reads (compose secrets are bind mounts of the host files, keeping owner and mode).
        # The CA key and the clients' key files stay the invoker's.
        export KELP_UID=10001 KELP_GID=10001
        chown -R 10001:10001 "$DATA_DIR"
        chown 10001:10001 "${MOUNTED_SECRETS[@]/#/$SECRETS/}"
    else
        # Run the containers as the invoking (non-root) user, who owns the dirs and the secrets.
        export KELP_UID="$(id -u)" KELP_GID="$(id -g)"
    fi
    for f in key.pem cluster.token jwt-signing.key api-keys ca-key.pem jwt-read.key write.api-key read.api-key; do
        want="600 $(id -u)"
        [[ " ${MOUNTED_SECRETS[*]} " == *" $f "* ]] && want="600 $KELP_UID"
        mode="$(stat -c '%a %u' "$SECRETS/$f")"
        [[ "$mode" == "$want" ]] || fail "$SECRETS/$f has mode/owner '$mode', expected '$want'"
    done
    log "key files are mode 0600: the mounted ones owned by uid $KELP_UID, the CA key and client keys by uid $(id -u)"
}

# call METHOD URL [curl args...]: the HTTP status (000: no HTTP answer), body in $WORK/body,
# curl's error in $WORK/curl.err. Trusts only the generated CA. HTTP/1.1: over HTTP/2, a
# request with a body that the server refuses before reading it (a 401) ends with the answer
# and RST_STREAM, which curl 7.88 at times reports as "(92) Stream error in the HTTP/2 framing
# layer" instead of the status (a client-side race).
call() {
    local m=$1 u=$2; shift 2
    rm -f "$WORK/body"
    curl -sS -m 10 --http1.1 --cacert "$CA" -o "$WORK/body" -w '%{http_code}' -X "$m" "$@" "$u" 2>"$WORK/curl.err" || true
}

# expect WHAT STATUS CODE METHOD URL [curl args...]: the answer must have STATUS (a regex) and,
# unless CODE is -, the JSON error code CODE (Kelp's `code`, or the registry's Confluent
# `error_code`).
expect() {
    local what=$1 want=$2 code=$3 got c=""; shift 3
    got="$(call "$@")"
    if [[ "$code" != - ]]; then
        c="$(python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(b.get("code", b.get("error_code", "")))' "$WORK/body" 2>/dev/null || true)"
    fi
    if ! [[ "$got" =~ ^($want)$ ]] || { [[ "$code" != - ]] && [[ "$c" != "$code" ]]; }; then
        [[ "$code" == - ]] && code=""
        fail "$what: got HTTP $got${c:+ $c}, expected $want${code:+ $code}; body: $(head -c 300 "$WORK/body" 2>/dev/null) $(cat "$WORK/curl.err")"
    fi
    log "  ok: $what -> $got${c:+ $c}"
}
