#!/usr/bin/env bash
# Profiles the service (perf, 1,999 samples a second) during the bench's
# durable `/v1/track` phase, its not-stored phase and the bare axum endpoint
# (the HTTP floor), then prints where each one's CPU goes in µs an event
# (scripts/perf_categories.py) against the CPU per event the bench measured.
#   scripts/profile-phases.sh sqlite|postgres [OUT_DIR]
# Needs `perf` (Debian's linux-perf) and a release build. perf's own overhead
# raises every figure by a tenth or so: compare the columns, not with
# unprofiled runs.
set -euo pipefail
backend="${1:?sqlite or postgres}"
out="${2:-target/profile-$backend}"
cd "$(dirname "$0")/.."
mkdir -p "$out"
bin=target/release/produktly-bench
[ -x "$bin" ] || cargo build --release --locked -p produktly-bench

"$bin" --backend "$backend" --seconds 20 --backlog 100000 > "$out/bench.txt" 2>&1 &
bench=$!
until service=$(pgrep -f "produktly-bench --serve$" | head -1); do sleep 0.2; done
address=$(tr '\0' '\n' < "/proc/$service/environ" | sed -n 's/^PRODUKTLY_LISTEN=//p')
counter() { curl -s "http://$address/metrics" | grep -F "$1" | grep -v '^#' | awk '{s += $NF} END {print s + 0}'; }
record() { perf record -F 1999 -p "$1" -o "$out/$2.data" -- sleep 12 > /dev/null 2>&1; }

until [ "$(counter produktly_events_received_total)" -gt 20000 ]; do sleep 0.2; done
record "$service" durable
until [ "$(counter 'reason="segment_not_configured"')" -gt 20000 ]; do sleep 0.2; done
record "$service" not-stored
until floor=$(pgrep -f "produktly-bench --serve-http-floor"); do sleep 0.2; done
sleep 3
record "$floor" floor
wait "$bench"

# The CPU per event the bench printed for a phase's row.
cpu() { grep -F "$1" "$out/bench.txt" | head -1 | sed -E 's/.*(service|CPU\/request) ([0-9.]+) µs.*/\2/'; }
durable=$(cpu "/v1/track, 64 connections, durable")
not_stored=$(cpu "/v1/track, 64 connections, not stored")
floor_us=$(cpu "bare axum endpoint")
grep '^|' "$out/bench.txt"
echo
echo "durable against not stored:"
python3 scripts/perf_categories.py "$out/durable.data" "$durable" "$out/not-stored.data" "$not_stored"
echo
echo "not stored against the HTTP floor:"
python3 scripts/perf_categories.py "$out/not-stored.data" "$not_stored" "$out/floor.data" "$floor_us"
