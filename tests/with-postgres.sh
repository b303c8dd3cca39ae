#!/usr/bin/env bash
# Run a command with the zero-config token on a throwaway PostgreSQL pool:
#   bash tests/with-postgres.sh bash examples/cli-transcript.sh
# initdb in a temp dir as an unprivileged user (PostgreSQL refuses root; as
# root the user softmhsm-pg is created if missing), a server on a free
# loopback port with trust authentication, an empty database "pool";
# SOFTMHSM_STORE_URL names it for the command. The cluster is stopped and
# removed on exit. Exits with the command's status; fails loudly when
# PostgreSQL is missing (apt-get install postgresql).
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "with-postgres.sh: no PostgreSQL (apt-get install postgresql)" >&2; exit 1; }
as=()
if [ "$(id -u)" -eq 0 ]; then
  id softmhsm-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin softmhsm-pg
  as=(runuser -u softmhsm-pg --)
fi
dir=$(mktemp -d /tmp/softmhsm-pg-XXXXXX)
[ ${#as[@]} -eq 0 ] || chown softmhsm-pg: "$dir"
cleanup() { "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
"${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir" start >/dev/null
"$bin/psql" -qX -h 127.0.0.1 -p "$port" -U postgres -c "CREATE DATABASE pool"
export SOFTMHSM_STORE_URL="postgresql://postgres@127.0.0.1:$port/pool"
echo "with-postgres.sh: SOFTMHSM_STORE_URL=$SOFTMHSM_STORE_URL"
"$@"
