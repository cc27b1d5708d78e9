#!/usr/bin/env bash
# Without a Docker engine: validate docker-compose.yml against the Compose
# schema, and build the binary with the Dockerfile's own build command to show
# it is the README's binary.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker-compose >/dev/null 2>&1; then
  echo "== installing docker-compose (schema validation only; no engine needed)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
  else
    python3 -m pip install --quiet --user docker-compose
  fi
fi
echo "== docker-compose.yml against the Compose schema"
docker-compose --env-file .env.example -f docker-compose.yml config -q
echo "compose file valid"

echo "== the Dockerfile's build command builds the README's binary"
build=$(grep -E '^RUN cargo build' Dockerfile | sed 's/^RUN //')
case "$build" in
  *"cargo build --release --locked --bin verriflo-relay"*) ;;
  *) echo "Dockerfile build command changed: $build" >&2; exit 1 ;;
esac
grep -q 'cargo build --release --locked' README.md || { echo "README.md lost its build command" >&2; exit 1; }
$build
version=$(./target/release/verriflo-relay --version)
want="verriflo-relay $(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)"
[ "$version" = "$want" ] || { echo "built $version, expected $want" >&2; exit 1; }
test -x target/release/examples/receiver
echo "Dockerfile builds $version"
