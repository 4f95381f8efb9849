#!/usr/bin/env bash
# A PostgreSQL HA lab on this machine: pg_auto_failover (Debian's
# postgresql-15-auto-failover and pg-auto-failover-cli) with a monitor and two
# nodes on local ports, synchronous replication between them, each node in a
# session of its own so that it can die as a machine does.
#
#   ha-lab.sh start        install what is missing, create the lab, wait for primary + secondary
#   ha-lab.sh url          the libpq multi-host URL of the formation
#   ha-lab.sh primary      the current primary's port
#   ha-lab.sh crash        kill -9 the primary's postmaster and its keeper (the node is gone)
#   ha-lab.sh freeze-standby  SIGSTOP the secondary (postmaster, its children, keeper): a hung
#                          machine, whose standby stops acknowledging commits without going away
#   ha-lab.sh rejoin       start the crashed node again: it rejoins as a secondary
#   ha-lab.sh switchover   planned switchover to the secondary
#   ha-lab.sh wait         until there is a primary and a secondary again
#   ha-lab.sh state        pg_autoctl show state
#   ha-lab.sh stop         stop everything and remove the lab
#
# HA_LAB_DIR (default /tmp/produktly-ha-lab) holds it; ports 5461 (monitor),
# 5462 and 5463 (nodes). Run as root (pg_autoctl then runs as postgres) or
# as the user that owns HA_LAB_DIR.
set -euo pipefail

DIR="${HA_LAB_DIR:-/tmp/produktly-ha-lab}"
MONITOR_PORT=5461
NODE_PORTS=(5462 5463)
DATABASE=produktly
BIN=/usr/lib/postgresql/15/bin
MONITOR_URL="postgres://autoctl_node@127.0.0.1:$MONITOR_PORT/pg_auto_failover?sslmode=disable"

as_owner() { # runs a command as the lab's owner, with the lab's pg_autoctl settings
  local env=(env "PATH=$BIN:$PATH" "XDG_CONFIG_HOME=$DIR/config" "XDG_DATA_HOME=$DIR/data" "XDG_RUNTIME_DIR=$DIR/run")
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "${env[@]}" "$@"; else "${env[@]}" "$@"; fi
}

autoctl() { as_owner pg_autoctl "$@"; }

# Starts `pg_autoctl ARGS` for NAME in a session of its own, whose id
# goes to NAME.sid: killing that session is the node's machine dying.
launch() { # launch NAME ARGS...
  local name=$1
  shift
  # shellcheck disable=SC2016 # $$ is the new session's shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$DIR/$name.sid" "$(realpath "$0")" as-owner \
    pg_autoctl "$@" >>"$DIR/$name.log" 2>&1 </dev/null &
  for _ in $(seq 1 50); do [ -s "$DIR/$name.sid" ] && return 0; sleep 0.1; done
}

state_json() { autoctl show state --pgdata "$DIR/monitor" --json 2>/dev/null || echo '[]'; }

# The name of the node in STATE (primary, secondary, …), if any.
node_in() {
  state_json | python3 -c "
import json, sys
try:
    nodes = json.load(sys.stdin)
except ValueError:
    nodes = []
print(next((n['nodename'] for n in nodes if n['current_group_state'] == sys.argv[1] and n['assigned_group_state'] == sys.argv[1]), ''))
" "$1"
}

port_of() { # port_of NODE_NAME
  state_json | python3 -c "
import json, sys
print(next(n['nodeport'] for n in json.load(sys.stdin) if n['nodename'] == sys.argv[1]))
" "$1"
}

wait_healthy() {
  for _ in $(seq 1 240); do
    if [ -n "$(node_in primary)" ] && [ -n "$(node_in secondary)" ]; then return 0; fi
    # pg_basebackup of a new secondary waits for a checkpoint: ask for one now.
    local primary
    primary=$(node_in wait_primary)
    if [ -n "$primary" ]; then
      psql -q -h 127.0.0.1 -p "$(port_of "$primary")" -U postgres -d postgres -c CHECKPOINT >/dev/null 2>&1 || true
    fi
    sleep 1
  done
  autoctl show state --pgdata "$DIR/monitor" || true
  echo "ha-lab: no primary and secondary after 4 minutes" >&2
  return 1
}

install() {
  command -v pg_autoctl >/dev/null 2>&1 && return 0
  echo "ha-lab: installing Debian's pg_auto_failover"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q postgresql-15-auto-failover pg-auto-failover-cli >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q postgresql-15-auto-failover pg-auto-failover-cli >/dev/null; }
}

start() {
  install
  stop_lab
  mkdir -p "$DIR/run"
  [ "$(id -u)" = 0 ] && chown -R postgres "$DIR"
  chmod 700 "$DIR/run"
  launch monitor create monitor --pgdata "$DIR/monitor" --pgport "$MONITOR_PORT" --auth trust --no-ssl \
    --hostname 127.0.0.1 --run
  for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p "$MONITOR_PORT" && break; sleep 1; done
  sleep 2
  # Faster than the defaults (a node is unhealthy after 20 s, a primary out of
  # reach is given 30 s to demote itself): the lab's failover takes seconds.
  psql -q -h 127.0.0.1 -p "$MONITOR_PORT" -U postgres -d pg_auto_failover <<'SQL'
ALTER SYSTEM SET pgautofailover.health_check_period = 1000;
ALTER SYSTEM SET pgautofailover.health_check_timeout = 1000;
ALTER SYSTEM SET pgautofailover.health_check_max_retries = 1;
ALTER SYSTEM SET pgautofailover.health_check_retry_delay = 500;
ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = 3000;
ALTER SYSTEM SET pgautofailover.primary_demote_timeout = 5000;
SELECT pg_reload_conf();
SQL
  local n=1
  for port in "${NODE_PORTS[@]}"; do
    launch "node$n" create postgres --pgdata "$DIR/node$n" --pgport "$port" --auth trust --no-ssl \
      --hostname 127.0.0.1 --name "node$n" --dbname "$DATABASE" --monitor "$MONITOR_URL" --run
    # The first node becomes the primary before the second registers.
    [ "$n" = 1 ] && for _ in $(seq 1 60); do [ -n "$(node_in single)" ] && break; sleep 1; done
    n=$((n + 1))
  done
  wait_healthy
  autoctl show state --pgdata "$DIR/monitor"
}

# Kills every process of the session NAME was launched in.
kill_session() { # kill_session NAME
  local sid
  sid=$(cat "$DIR/$1.sid" 2>/dev/null || true)
  [ -n "$sid" ] || return 0
  for _ in $(seq 1 20); do
    pkill -9 -s "$sid" 2>/dev/null || return 0
    sleep 0.2
  done
}

crash() { # crash primary|secondary
  local node port
  node=$(node_in "$1")
  [ -n "$node" ] || { echo "ha-lab: no $1 to crash" >&2; return 1; }
  port=$(port_of "$node")
  echo "$node" >"$DIR/crashed"
  kill_session "$node"
  echo "killed the $1 $node (port $port): its postmaster and keeper"
}

freeze_standby() {
  local node postmaster
  node=$(node_in secondary)
  [ -n "$node" ] || { echo "ha-lab: no secondary to freeze" >&2; return 1; }
  postmaster=$(head -1 "$DIR/$node/postmaster.pid")
  # PostgreSQL's children have sessions of their own: stop them by parent.
  pkill -STOP -P "$postmaster" || true
  kill -STOP "$postmaster"
  pkill -STOP -s "$(cat "$DIR/$node.sid")" || true
  echo "froze the secondary $node (port $(port_of "$node"))"
}

rejoin() {
  local node
  node=$(cat "$DIR/crashed")
  launch "$node" run --pgdata "$DIR/$node"
  echo "started $node again"
}

switchover() {
  autoctl perform switchover --pgdata "$DIR/monitor" --formation default --group 0
}

stop_lab() {
  [ -d "$DIR" ] || return 0
  # A postmaster's children have sessions of their own: they go with it.
  for pid_file in "$DIR"/*/postmaster.pid; do
    [ -e "$pid_file" ] || continue
    postmaster=$(head -1 "$pid_file")
    pkill -9 -P "$postmaster" 2>/dev/null || true
    kill -9 "$postmaster" 2>/dev/null || true
  done
  for sid in "$DIR"/*.sid; do
    [ -e "$sid" ] && kill_session "$(basename "$sid" .sid)"
  done
  rm -rf "$DIR"
}

case "${1:-}" in
  start) start ;;
  url) autoctl show uri --pgdata "$DIR/monitor" --formation default | sed 's/sslmode=prefer/sslmode=disable/' ;;
  primary) port_of "$(node_in primary)" ;;
  crash) crash primary ;;
  freeze-standby) freeze_standby ;;
  rejoin) rejoin ;;
  switchover) switchover ;;
  wait) wait_healthy ;;
  state) autoctl show state --pgdata "$DIR/monitor" ;;
  stop) stop_lab ;;
  as-owner) shift; as_owner "$@" ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
