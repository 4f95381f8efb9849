#!/usr/bin/env bash
# PostgreSQL failover on a real HA engine (CI runs this): starts the
# pg_auto_failover lab (scripts/ha-lab.sh: a monitor and two nodes with
# synchronous replication on local ports, installed from Debian's packages
# when missing), then runs the service against its multi-host URL under
# steady ingest while the primary's machine dies, the old primary rejoins, a
# planned switchover moves the primary back, and the standby goes
# (tests/api/failover.rs, `ha_lab_crash_switchover_and_standby_loss`). It
# prints the figures and fails on a lost or unexplained duplicate event, a
# `500`, a recovery slower than its bound, or a restart of the service.
set -euo pipefail
cd "$(dirname "$0")/.."
lab=scripts/ha-lab.sh
trap 'bash "$lab" stop' EXIT

bash "$lab" start
url=$(bash "$lab" url)
export HA_LAB_SCRIPT="$PWD/$lab"
export HA_LAB_URL="${url/postgres:\/\//postgres://postgres@}"
echo "the service connects to $HA_LAB_URL"
cargo test --locked --test api failover::ha_lab -- --ignored --nocapture
