#!/usr/bin/env bash
# The live benchmarks (BENCHMARKS.md): the relay polling and delivering at
# once against nginx as upstream and receiver, with wrk's ceiling on the same
# nginx. Installs Debian's nginx-light and wrk when missing, then runs every
# shape, or the one named: `scripts/bench-live.sh throughput 2000 10`.
# `scripts/bench-live.sh cluster ROOMS INSTANCES` also starts PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --locked --bin verriflo-relay --example bench_live
if [ "${1:-}" = cluster ]; then
  # Cluster mode's shapes run on a real PostgreSQL (durable: fsync on).
  source scripts/pg.sh
  ./target/release/examples/bench_live "$@"
  exit
fi
exec ./target/release/examples/bench_live "$@"
