#!/usr/bin/env bash
# The OpenAPI document against the live service, as a generated client would
# meet it: Schemathesis (pinned, from PyPI, in a virtual environment made
# here) runs every check and every phase, the stateful one included, against
# the service on SQLite with one workspace set up. Any failure fails the run.
#
#   bash scripts/api-contract.sh                 # the fixed seed CI uses
#   SCHEMATHESIS_SEED=random bash scripts/api-contract.sh   # explore
#   SCHEMATHESIS_EXAMPLES=200 bash scripts/api-contract.sh  # more cases
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
seed="${SCHEMATHESIS_SEED:-20261130}"
seed_args=(--seed "$seed")
[ "$seed" = random ] && seed_args=()
examples="${SCHEMATHESIS_EXAMPLES:-40}"
venv="target/schemathesis-$SCHEMATHESIS_VERSION"

if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "installing Schemathesis $SCHEMATHESIS_VERSION into $venv"
  python3 -m venv "$venv" || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
    python3 -m venv "$venv"
  }
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --locked --quiet --bin produktly-segment
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# A stand-in for Segment that accepts every batch, so that delivery and the
# test call see a healthy Segment.
segment_port="$(free_port)"
python3 - "$segment_port" <<'PY' &
import http.server, sys
class Segment(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"success":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Segment).serve_forever()
PY
pids+=($!)

port="$(free_port)"
base="http://127.0.0.1:$port"
(
  cd "$work"
  # Rate limits off: the run sends thousands of requests from one address.
  PRODUKTLY_LISTEN="127.0.0.1:$port" \
  PRODUKTLY_ADMIN_REQUESTS_PER_SEC=0 \
  PRODUKTLY_INGEST_IP_REQUESTS_PER_SEC=0 \
  PRODUKTLY_INGEST_KEY_REQUESTS_PER_SEC=0 \
  PRODUKTLY_SEGMENT_US_URL="http://127.0.0.1:$segment_port" \
  PRODUKTLY_SEGMENT_EU_URL="http://127.0.0.1:$segment_port" \
  RUST_LOG=warn \
    exec "$OLDPWD/target/debug/produktly-segment" >"$work/service.log" 2>&1
) &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null || { cat "$work/service.log"; exit 1; }

token="$(cat "$work/data/admin-token")"
admin() { curl -fsS -X "$1" "$base$2" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "$3"; }
ingest_key="$(admin POST /admin/v1/workspaces '{"id": "contract", "name": "API contract"}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["ingest_key"])')"
admin PUT /admin/v1/workspaces/contract/integrations/segment '{"write_key": "contract-write-key"}' >/dev/null

# The live tail (Server-Sent Events) never ends by itself, so a request-answer
# checker cannot judge it; tests/api/debugger.rs does.
echo "--- Schemathesis $SCHEMATHESIS_VERSION against $base/openapi.json (seed $seed, $examples examples)"
"$venv/bin/schemathesis" --config-file tests/schemathesis.toml run "$base/openapi.json" \
  --checks all --phases "${SCHEMATHESIS_PHASES:-examples,coverage,fuzzing,stateful}" \
  --max-examples "$examples" "${seed_args[@]}" \
  --exclude-operation-id streamActivity \
  -H "Authorization: Bearer $token" -H "X-Produktly-Key: $ingest_key" ${SCHEMATHESIS_ARGS:-} \
  || { echo "--- the service's log"; tail -n 50 "$work/service.log"; exit 1; }
