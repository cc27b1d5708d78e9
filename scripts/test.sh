#!/usr/bin/env bash
# The whole test suite on a fresh machine with only the Rust toolchain:
# installs the official Standard Webhooks verifiers for Python and Node (the
# cross-language tests run real deliveries through them), schemathesis (it
# fuzzes the API from its OpenAPI document) and Debian's Chromium with its
# WebDriver (the dashboard's browser test) and PostgreSQL (the cluster
# tests: a throwaway server under target/, on a random port, stopped on
# exit), then runs `cargo test` including those tests.
set -euo pipefail
cd "$(dirname "$0")/.."

xlang="$PWD/target/xlang"
mkdir -p "$xlang/py" "$xlang/node"
if ! PYTHONPATH="$xlang/py" python3 -c "import standardwebhooks" 2>/dev/null; then
  echo "== installing the Python Standard Webhooks verifier"
  python3 -m pip install --quiet --disable-pip-version-check --target "$xlang/py" "standardwebhooks==1.*"
fi
if [ ! -x "$xlang/py/bin/schemathesis" ]; then
  echo "== installing schemathesis (API fuzzing from the OpenAPI document)"
  python3 -m pip install --quiet --disable-pip-version-check --target "$xlang/py" "schemathesis==4.*"
fi
if [ ! -d "$xlang/node/node_modules/standardwebhooks" ]; then
  echo "== installing the Node Standard Webhooks verifier"
  npm install --silent --no-audit --no-fund --prefix "$xlang/node" "standardwebhooks@1"
fi
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "== installing Debian's chromium and chromium-driver (the dashboard's browser test)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
if [ -z "$(pg_bin)" ]; then
  echo "== installing Debian's postgresql (the cluster tests)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi
# PostgreSQL refuses to run as root: as root, the server runs as the
# package's own unprivileged user.
as_pg=()
[ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
pg="$PWD/target/pg"
rm -rf "$pg" && mkdir -p "$pg"
[ "$(id -u)" -eq 0 ] && chown postgres "$pg"
pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$(pg_bin)/initdb" -D "$pg/data" -U postgres --auth=trust -E UTF8 >/dev/null
"${as_pg[@]}" "$(pg_bin)/pg_ctl" -D "$pg/data" -l "$pg/log" -w start \
  -o "-p $pg_port -k $pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" >/dev/null
trap '"${as_pg[@]}" "$(pg_bin)/pg_ctl" -D "$pg/data" -m fast -w stop >/dev/null || true' EXIT
export RELAY_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
echo "== PostgreSQL for the cluster tests on port $pg_port"

export PYTHONPATH="$xlang/py${PYTHONPATH:+:$PYTHONPATH}"
export SCHEMATHESIS="$xlang/py/bin/schemathesis"
export NODE_PATH="$xlang/node/node_modules${NODE_PATH:+:$NODE_PATH}"

cargo test --locked -- --include-ignored
