#!/usr/bin/env bash
# The image as operators run it, under a real Docker engine (CI runs this).
#
#   scripts/container-test.sh
#
# Installs what it needs from Debian (docker.io, debootstrap, docker-compose)
# when missing, starts a dockerd of its own when none answers, makes the
# runtime's base image with `debootstrap --variant=minbase bookworm` and
# `docker import` (no registry is reachable here), builds the image from the
# release binary (the Dockerfile's `prebuilt` path: no Rust image can be
# pulled either), and checks:
#   - the SQLite default, with an anonymous and with a named volume: healthy by
#     its own HEALTHCHECK, /readyz ready, not running as root, a workspace
#     created and events queued, `docker stop` exiting 0 within Docker's
#     default 10 s, and a restart on the same volume keeping the admin token,
#     the workspace and every queued event;
#   - the open-file limit raised to the container's hard limit (the
#     connection bound follows);
#   - PostgreSQL: two containers on one database, an event ingested through
#     one delivered by the other or itself to a mock Segment (gzip inflated);
#   - docker-compose.yml, validated by docker-compose.
# Outside CI a machine that cannot run Docker skips; with CI=true that fails.
set -euo pipefail
cd "$(dirname "$0")/.."
CI="${CI:-false}"
IMAGE=produktly-segment:container-test
BASE=produktly-base:bookworm
WORK=$(mktemp -d)
CONTAINERS=()
STARTED_DOCKERD=""

say() { echo "container-test: $*"; }
fail() { say "FAIL: $*"; exit 1; }
cannot() {
  if [ "$CI" = true ]; then fail "$*"; fi
  say "SKIP: $*"
  exit 0
}
cleanup() {
  for c in "${CONTAINERS[@]}"; do docker rm -f -v "$c" >/dev/null 2>&1 || true; done
  docker volume rm produktly-container-test >/dev/null 2>&1 || true
  [ -n "${MOCK_PID:-}" ] && kill "$MOCK_PID" 2>/dev/null || true
  [ -n "${PG_DB:-}" ] && psql -q -h 127.0.0.1 -U postgres -d test -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
  [ -n "$STARTED_DOCKERD" ] && kill "$STARTED_DOCKERD" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- tools -----------------------------------------------------------------
missing=()
[ -x /usr/bin/docker ] && command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; } \
    || cannot "could not install ${missing[*]}"
fi
# Debian's client (20.10) builds with the engine's own BuildKit; a newer
# client elsewhere on the PATH would want the buildx plugin.
docker() { /usr/bin/docker "$@"; }
export DOCKER_BUILDKIT=1

# --- engine ----------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  say "starting dockerd"
  dockerd --storage-driver overlay2 >"$WORK/dockerd.log" 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log"; cannot "dockerd did not start"; }
fi

# --- base image and the service's image -------------------------------------
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  say "making $BASE with debootstrap (minbase bookworm)"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; cannot "debootstrap failed"; }
  tar -C "$WORK/rootfs" -c . | docker import - "$BASE" >/dev/null
  rm -rf "$WORK/rootfs"
fi
say "building the release binary"
cargo build --release --locked --quiet
mkdir "$WORK/context"
cp target/release/produktly-segment "$WORK/context/"
say "building $IMAGE from the prebuilt binary on $BASE"
docker build -q -t "$IMAGE" --build-arg BINARY=prebuilt --build-arg RUNTIME_BASE="$BASE" \
  -f Dockerfile "$WORK/context" >/dev/null

# --- helpers -----------------------------------------------------------------
wait_healthy() {
  for _ in $(seq 1 60); do
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$1")" = healthy ] && return 0
    [ "$(docker inspect -f '{{.State.Running}}' "$1")" = true ] || { docker logs "$1" | tail -20; fail "$1 exited"; }
    sleep 1
  done
  docker logs "$1" | tail -20
  fail "$1 not healthy within 60 s"
}
# curl: status code, body to $WORK/body.
call() { curl -s -o "$WORK/body" -w '%{http_code}' "$@"; }
expect() { # expect CODE what… (the call's arguments follow `--`)
  local code=$1; shift; local what=$1; shift; shift
  local got; got=$(call "$@")
  [ "$got" = "$code" ] || { cat "$WORK/body"; echo; fail "$what: HTTP $got, not $code"; }
}
json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$WORK/body" "$1"; }
queued() {
  expect 200 "integration status" -- "$1/admin/v1/workspaces/acme/integrations/segment" -H "Authorization: Bearer $2"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"]["queued"])' "$WORK/body"
}

# --- the SQLite default -----------------------------------------------------
sqlite_default() { # sqlite_default LABEL [docker run volume options…]
  local label=$1; shift
  say "SQLite default, $label"
  # Segment out of reach: the events stay queued, so a restart must keep them.
  local cid; cid=$(docker run -d -p 127.0.0.1::8080 -e PRODUKTLY_SEGMENT_US_URL=http://127.0.0.1:9 "$@" "$IMAGE")
  CONTAINERS+=("$cid")
  wait_healthy "$cid"
  local url="http://$(docker port "$cid" 8080/tcp | head -1)"
  expect 200 "/readyz" -- "$url/readyz"
  local uid; uid=$(docker exec "$cid" sh -c 'grep ^Uid: /proc/1/status' | awk '{print $2}')
  [ "$uid" != 0 ] || fail "the service runs as root"
  local token; token=$(docker exec "$cid" cat data/admin-token)
  expect 201 "create a workspace" -- -X POST "$url/admin/v1/workspaces" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d '{"id": "acme", "name": "Acme"}'
  local key; key=$(json_field ingest_key)
  expect 200 "set the integration" -- -X PUT "$url/admin/v1/workspaces/acme/integrations/segment" \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{"write_key": "wk_container"}'
  for i in 1 2 3; do
    expect 202 "ingest" -- -X POST "$url/v1/track" -H "X-Produktly-Key: $key" -H 'Content-Type: application/json' \
      -d "{\"event\": \"tour_start\", \"userId\": \"u$i\", \"properties\": {\"tour_id\": \"t\"}}"
  done
  [ "$(queued "$url" "$token")" = 3 ] || fail "3 events queued"

  local started; started=$(date +%s%N)
  docker stop "$cid" >/dev/null
  local took=$(( ($(date +%s%N) - started) / 1000000 ))
  local code; code=$(docker inspect -f '{{.State.ExitCode}}' "$cid")
  [ "$code" = 0 ] || { docker logs "$cid" | tail -20; fail "docker stop: exit code $code"; }
  [ "$took" -lt 10000 ] || fail "docker stop took $took ms, past Docker's 10 s grace"
  say "  docker stop: exit 0 after $took ms"

  if [ "$label" = "a named volume" ]; then
    docker rm "$cid" >/dev/null
    cid=$(docker run -d -p 127.0.0.1::8080 -e PRODUKTLY_SEGMENT_US_URL=http://127.0.0.1:9 "$@" "$IMAGE")
    CONTAINERS+=("$cid")
  else
    docker start "$cid" >/dev/null
  fi
  wait_healthy "$cid"
  url="http://$(docker port "$cid" 8080/tcp | head -1)"
  [ "$(docker exec "$cid" cat data/admin-token)" = "$token" ] || fail "the admin token changed across the restart"
  [ "$(queued "$url" "$token")" = 3 ] || fail "queued events lost across the restart"
  say "  restarted on the same volume: same admin token, workspace and 3 queued events"
}
sqlite_default "an anonymous volume"
sqlite_default "a named volume" -v produktly-container-test:/var/lib/produktly/data

# --- the open-file limit ----------------------------------------------------------
say "open-file limit: soft 1024, hard 4096"
cid=$(docker run -d -p 127.0.0.1::8080 --ulimit nofile=1024:4096 "$IMAGE")
CONTAINERS+=("$cid")
wait_healthy "$cid"
expect 200 "/metrics" -- "http://$(docker port "$cid" 8080/tcp | head -1)/metrics"
grep -qx 'produktly_http_connections_limit 3840' "$WORK/body" \
  || { grep produktly_http_connections "$WORK/body"; fail "the connection bound is not the hard limit less 256"; }
say "  raised to the hard limit: room for 3840 client connections"
docker stop "$cid" >/dev/null

# --- PostgreSQL: two instances on one database ---------------------------------
say "PostgreSQL: two instances on one database"
pg_isready -h 127.0.0.1 -p 5432 -q || cannot "PostgreSQL does not answer on 127.0.0.1:5432"
PG_DB="produktly_container_$$"
psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE DATABASE $PG_DB" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
MOCK_PORT=$(free_port)
cat >"$WORK/mock.py" <<'EOF'
# A stand-in for Segment's POST /v1/batch: inflates gzip, appends each body to a file.
import gzip, http.server, sys
class Batch(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        with open(sys.argv[2], "ab") as out:
            out.write(body + b"\n")
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"success":true}')
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Batch).serve_forever()
EOF
python3 "$WORK/mock.py" "$MOCK_PORT" "$WORK/segment.log" &
MOCK_PID=$!
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
SECRET=$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')
urls=()
for n in 1 2; do
  port=$(free_port)
  cid=$(docker run -d --network host -e "PRODUKTLY_LISTEN=127.0.0.1:$port" \
    -e "DATABASE_URL=postgres://postgres@127.0.0.1:5432/$PG_DB" -e "PRODUKTLY_ADMIN_TOKENS=$TOKEN" \
    -e "PRODUKTLY_SECRET_KEY=$SECRET" -e "PRODUKTLY_SEGMENT_US_URL=http://127.0.0.1:$MOCK_PORT" "$IMAGE")
  CONTAINERS+=("$cid")
  wait_healthy "$cid"
  urls+=("http://127.0.0.1:$port")
done
expect 201 "create a workspace on the first" -- -X POST "${urls[0]}/admin/v1/workspaces" \
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"id": "acme", "name": "Acme"}'
KEY=$(json_field ingest_key)
expect 200 "set the integration on the second" -- -X PUT "${urls[1]}/admin/v1/workspaces/acme/integrations/segment" \
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"write_key": "wk_postgres"}'
expect 202 "ingest on the second" -- -X POST "${urls[1]}/v1/track" -H "X-Produktly-Key: $KEY" \
  -H 'Content-Type: application/json' \
  -d '{"event": "tour_start", "userId": "u1", "messageId": "container-msg-1", "properties": {"tour_id": "t"}}'
for _ in $(seq 1 30); do grep -q container-msg-1 "$WORK/segment.log" 2>/dev/null && break; sleep 0.5; done
grep -q container-msg-1 "$WORK/segment.log" || fail "the event did not reach the mock Segment"
[ "$(grep -c container-msg-1 "$WORK/segment.log")" = 1 ] || fail "the event reached Segment more than once"
[ "$(queued "${urls[0]}" "$TOKEN")" = 0 ] || fail "the first instance still sees it queued"
say "  the event reached the mock Segment once; both instances see the queue empty"

# --- docker-compose.yml ----------------------------------------------------------
PRODUKTLY_ADMIN_TOKENS=$TOKEN PRODUKTLY_SECRET_KEY=$SECRET docker-compose -f docker-compose.yml config -q \
  || fail "docker-compose.yml does not validate"
say "docker-compose.yml validates"
say "all checks passed"
