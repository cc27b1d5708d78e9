# Sourced by scripts/test.sh and scripts/bench-live.sh: install Debian's
# postgresql when missing, start a throwaway server under target/pg on a
# random port (as the package's unprivileged user when run as root, since
# PostgreSQL refuses root), stop it on exit, and export its URL as
# RELAY_TEST_DATABASE_URL.
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
if [ -z "$(pg_bin)" ]; then
  echo "== installing Debian's postgresql (cluster mode)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi
as_pg=()
[ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
pg="$PWD/target/pg"
rm -rf "$pg" && mkdir -p "$pg"
[ "$(id -u)" -eq 0 ] && chown postgres "$pg"
pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$(pg_bin)/initdb" -D "$pg/data" -U postgres --auth=trust -E UTF8 >/dev/null
"${as_pg[@]}" "$(pg_bin)/pg_ctl" -D "$pg/data" -l "$pg/log" -w start \
  -o "-p $pg_port -k $pg -c listen_addresses=127.0.0.1 -c max_connections=200 ${PG_EXTRA_OPTIONS:-}" >/dev/null
trap '"${as_pg[@]}" "$(pg_bin)/pg_ctl" -D "$pg/data" -m fast -w stop >/dev/null || true' EXIT
export RELAY_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
echo "== PostgreSQL on port $pg_port"
