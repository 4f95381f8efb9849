#!/usr/bin/env bash
# A long run under steady load (not part of CI): the service on SQLite or
# PostgreSQL, a mock Segment, single-event /v1/track requests at a fixed rate
# for a while, with the service's memory, the queue depth and what reached
# Segment sampled every 30 s. By default 10 minutes at 9,000 events/s, about a
# third of what one instance takes on a 2-core machine.
#
#   scripts/soak.sh [sqlite|postgres] [seconds] [events per second]
#
# With RESTART_POSTGRES=1 (and postgres), PostgreSQL is restarted halfway
# through: ingest answers 503 while it is down, and everything acknowledged
# is still delivered.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
seconds=${2:-600}
rate=${3:-9000}
cargo build --release --locked --quiet -p produktly-bench
if [ "${RESTART_POSTGRES:-0}" = 1 ] && [ "$backend" = postgres ]; then
  ( sleep $((seconds / 2)); echo "restarting PostgreSQL"; \
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main restart ) &
fi
exec target/release/produktly-bench --backend "$backend" --soak "$seconds" --soak-rate "$rate"
