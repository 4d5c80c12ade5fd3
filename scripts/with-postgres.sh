#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL cluster listening on 127.0.0.1 at a free
# port, and TEST_DATABASE_URL (postgres://postgres@127.0.0.1:PORT, no database part)
# exported. Tests create one fresh database each under it. The cluster is removed on exit.
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "with-postgres: no PostgreSQL server; run scripts/install-tools.sh" >&2; exit 1; }
dir=$(mktemp -d /tmp/pg-test-XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# initdb refuses to run as root: run the server as the postgres user then.
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$dir"

as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
stop() { as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap stop EXIT
as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
  -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null

export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port"
echo "with-postgres: PostgreSQL on 127.0.0.1:$port" >&2
"$@"
