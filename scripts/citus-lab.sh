#!/usr/bin/env bash
# Past one PostgreSQL, proved on a real Citus (issue 33): a coordinator and two
# workers as local clusters (Debian's pg_createcluster, ports 5451-5453), the
# service's queue distributed by workspace with its own `citus-distribute`.
#
#   citus-lab.sh           start the lab, run the Citus tests on it, stop it
#   citus-lab.sh start     create the clusters if missing, start them, wait
#   citus-lab.sh url       the coordinator's URL (database `produktly`)
#   citus-lab.sh stop      stop and remove the clusters
#
# Citus has no Debian package: where its extension is not installed into
# this machine's PostgreSQL (`citus.control`), the lab says so and exits 0
# (docs/operations.md, "Past one PostgreSQL", says how to build it).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=15
PORTS=(5451 5452 5453)
NAMES=(citus_coordinator citus_worker1 citus_worker2)
DATABASE=produktly
SHAREDIR=$(pg_config --sharedir 2>/dev/null || echo /usr/share/postgresql/$VERSION)

installed() { [ -f "$SHAREDIR/extension/citus.control" ]; }

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

psql_on() { # psql_on PORT [DATABASE] SQL
  local port=$1 db=$2
  shift 2
  as_postgres psql -X -q -v ON_ERROR_STOP=1 -At -h 127.0.0.1 -p "$port" -U postgres -d "$db" -c "$*"
}

start() {
  for i in 0 1 2; do
    local name=${NAMES[$i]} port=${PORTS[$i]}
    if ! pg_lsclusters -h | awk '{print $2}' | grep -qx "$name"; then
      pg_createcluster -q "$VERSION" "$name" -p "$port" -- --auth=trust >/dev/null
      local conf=/etc/postgresql/$VERSION/$name/conf.d/citus.conf
      {
        echo "shared_preload_libraries = 'citus'"
        echo "listen_addresses = '127.0.0.1'"
        echo "wal_level = logical"
        echo "max_connections = 200"
        echo "citus.enable_statistics_collection = off"
        # What runs on more than one shard is logged: the lab checks that
        # only the statements meant to span workspaces do.
        echo "citus.multi_task_query_log_level = log"
        echo "log_min_messages = log"
      } >"$conf"
      sed -i 's/^host\s\+all\s\+all\s\+127.0.0.1\/32\s\+\S\+/host all all 127.0.0.1\/32 trust/' \
        "/etc/postgresql/$VERSION/$name/pg_hba.conf"
    fi
    pg_ctlcluster --skip-systemctl-redirect "$VERSION" "$name" start 2>/dev/null || true
  done
  for port in "${PORTS[@]}"; do
    for _ in $(seq 1 100); do psql_on "$port" postgres "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
    psql_on "$port" postgres "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'" | grep -q 1 ||
      psql_on "$port" postgres "CREATE DATABASE $DATABASE"
    psql_on "$port" "$DATABASE" "CREATE EXTENSION IF NOT EXISTS citus"
  done
  psql_on "${PORTS[0]}" "$DATABASE" "SELECT citus_set_coordinator_host('127.0.0.1', ${PORTS[0]})" >/dev/null
  for port in "${PORTS[@]:1}"; do
    psql_on "${PORTS[0]}" "$DATABASE" \
      "SELECT citus_add_node('127.0.0.1', $port) WHERE NOT EXISTS (SELECT 1 FROM pg_dist_node WHERE nodeport = $port)" >/dev/null
  done
}

stop() {
  for name in "${NAMES[@]}"; do
    if pg_lsclusters -h | awk '{print $2}' | grep -qx "$name"; then
      pg_dropcluster --stop "$VERSION" "$name"
    fi
  done
}

# Every statement Citus ran on more than one shard during the tests (the
# coordinator logs them: citus.multi_task_query_log_level), counted; fails
# if one names a single workspace (`workspace_id = $n`), except the two
# INSERT ... SELECT that Citus runs through the coordinator because their
# target's identity column takes the next id (expiry, replay: rare, and
# their EXPLAIN with values shows one task).
multi_task_check() { # multi_task_check LOG FROM_LINE
  tail -n +"$(($2 + 1))" "$1" | python3 -c '
import re, sys
statements, last = {}, None
for line in sys.stdin:
    if "multi-task query about to be executed" in line:
        last = "pending"
    elif last == "pending" and "STATEMENT:" in line:
        text = line.split("STATEMENT:", 1)[1].strip()
        statements[text] = statements.get(text, 0) + 1
        last = None
through_coordinator = ("FROM events WHERE workspace_id = $1 AND id = ANY($2)",
                       "FROM dead_letters WHERE workspace_id = $1 AND id = ANY($2)")
bad = []
print("citus lab: statements run on more than one shard (count, statement):")
for text, count in sorted(statements.items(), key=lambda s: -s[1]):
    print(f"  {count:6d}  {text[:160]}")
    expected = text.startswith("INSERT INTO") and any(part in text for part in through_coordinator)
    if re.search(r"workspace_id = \$[0-9]", text) and not expected:
        bad.append(text)
if bad:
    sys.exit("citus lab: statements that name one workspace ran on more than one shard:\n" + "\n".join(bad))
print("citus lab: every other statement that names one workspace ran on one shard")
'
}

url() { echo "postgres://postgres@127.0.0.1:${PORTS[0]}/$DATABASE?sslmode=disable"; }

case "${1:-run}" in
  start) installed || { echo "Citus is not installed" >&2; exit 1; }; start ;;
  url) url ;;
  stop) stop ;;
  run)
    if ! installed; then
      echo "citus lab: SKIPPED, Citus is not installed here ($SHAREDIR/extension/citus.control is missing)"
      exit 0
    fi
    trap stop EXIT
    start
    log=/var/log/postgresql/postgresql-$VERSION-${NAMES[0]}.log
    seen=$(wc -l <"$log")
    export PRODUKTLY_TEST_CITUS_URL
    PRODUKTLY_TEST_CITUS_URL=$(url)
    # The tests of the store and of several instances, on Citus.
    cargo test --locked --test api -- store_conformance::postgres instances fairness::postgres faults::postgres
    # Shards moved under ingest, alone: the rebalancer moves every test's shards.
    cargo test --locked --test api citus::on_citus -- --ignored --nocapture
    # The service's own command, twice: the second run finds nothing to do.
    for _ in 1 2; do
      env -u PRODUKTLY_TEST_CITUS_URL DATABASE_URL="$(url)" PRODUKTLY_ADMIN_TOKENS=citus-lab-admin-token-0123456789 \
        PRODUKTLY_SECRET_KEY=Y2l0dXMtbGFiLXNlYWxpbmcta2V5LTAxMjM0NTY3ODk= \
        PRODUKTLY_DATA_DIR=$(mktemp -d) cargo run --locked --quiet -- citus-distribute
    done
    multi_task_check "$log" "$seen"
    ;;
  *) echo "usage: $0 [start|url|stop]" >&2; exit 2 ;;
esac
