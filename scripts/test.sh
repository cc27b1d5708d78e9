#!/usr/bin/env bash
# The whole test suite on a fresh machine with only the Rust toolchain:
# installs the official Standard Webhooks verifiers for Python and Node (the
# cross-language tests run real deliveries through them), schemathesis (it
# fuzzes the API from its OpenAPI document) and Debian's Chromium with its
# WebDriver (the dashboard's browser test) and PostgreSQL (the cluster
# tests: a throwaway server under target/, on a random port, stopped on
# exit), then runs `cargo test` including those tests, and the end-to-end
# suite once more with its in-process relays in cluster mode.
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
# The cluster tests' PostgreSQL; fsync off, as its data is thrown away.
PG_EXTRA_OPTIONS="-c fsync=off"
source scripts/pg.sh

export PYTHONPATH="$xlang/py${PYTHONPATH:+:$PYTHONPATH}"
export SCHEMATHESIS="$xlang/py/bin/schemathesis"
export NODE_PATH="$xlang/node/node_modules${NODE_PATH:+:$NODE_PATH}"

status=0
cargo test --locked -- --include-ignored || status=$?
# The end-to-end suite again with every in-process relay on PostgreSQL
# (cluster mode, a database per data dir): every route, both backends.
if [ "$status" -eq 0 ]; then
  echo "== the end-to-end suite in cluster mode (E2E_BACKEND=postgres)"
  E2E_BACKEND=postgres cargo test --locked --test e2e -- --include-ignored || status=$?
fi
# A deadlock's victim loses its transaction (an attempt made again, say):
# show any, with both statements, pass or fail.
if grep -q "deadlock detected" "$pg/log"; then
  echo "== PostgreSQL reported deadlocks during the tests"
  grep -A8 "deadlock detected" "$pg/log"
fi
exit "$status"
