#!/usr/bin/env bash
# Install (once) and start (idempotently) the local services on loopback:
#   RabbitMQ from Debian's rabbitmq-server, FerretDB 1.24 (SQLite backend) built as a Go module.
# Usage: deploy/services.sh [start|stop|status]     (default: start)
# Needs no answer from a person; a second `start` with services up returns at once.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=deploy/gomodule.sh
. "$HERE/gomodule.sh"
STATE=${HH_SERVICES_DIR:-$HOME/.local/share/hh-callbacks}
TOOLS=${HH_TOOLS_DIR:-$HOME/.local/hh-tools}
FERRETDB_VERSION=v1.24.2
GO_NEEDED=1.24  # FerretDB 1.24's go.mod: `go 1.24` (older Go cannot read its toolchain line)
FERRETDB_BIN=$TOOLS/bin/ferretdb-$FERRETDB_VERSION-idfix  # the name says which build it is
MONGO_PORT=${HH_MONGO_PORT:-27017}
AMQP_PORT=${HH_AMQP_PORT:-5672}

log() { printf '[services] %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

install_rabbitmq() {
  command -v rabbitmq-server >/dev/null 2>&1 && return
  log "installing rabbitmq-server from Debian"
  as_root apt-get update -qq
  # policy-rc.d or a missing init system may refuse to start it here; we start it ourselves.
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
}

# Go >= $GO_NEEDED, or one line saying what is needed (Debian's own golang is too old).
check_go() {
  command -v go >/dev/null 2>&1 || { log "Go $GO_NEEDED or newer is needed to build FerretDB; no go on PATH"; exit 1; }
  local found major minor
  found=$(go env GOVERSION 2>/dev/null || true)
  major=$(printf '%s' "$found" | sed -n 's/^go\([0-9]*\)\.\([0-9]*\).*/\1/p')
  minor=$(printf '%s' "$found" | sed -n 's/^go\([0-9]*\)\.\([0-9]*\).*/\2/p')
  if [ -z "$major" ] || [ "$major" -lt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -lt "${GO_NEEDED#1.}" ]; }; then
    log "Go $GO_NEEDED or newer is needed to build FerretDB $FERRETDB_VERSION; found ${found:-an unknown version} ($(command -v go))"
    exit 1
  fi
}

install_ferretdb() {
  [ -x "$FERRETDB_BIN" ] && return
  check_go
  log "building FerretDB $FERRETDB_VERSION (about two minutes, once)"
  # From the module's own source (deploy/gomodule.sh): a build as a dependency would lack the
  # build/version/version.txt that the binary insists on.
  local build
  build=$(go_module_copy github.com/FerretDB/FerretDB "$FERRETDB_VERSION") \
    || { log "could not download FerretDB $FERRETDB_VERSION"; exit 1; }
  echo "$FERRETDB_VERSION" >"$build/build/version/version.txt"
  # Upstream bug in the SQLite backend: statements select by `_ferretdb_sjson->'$._id'`, but the
  # unique _id index is on `_ferretdb_sjson->"_id"`; SQLite treats them as different
  # expressions, so every update, replace and delete by _id scanned the whole collection
  # (34 ms at 5,000 documents; 1.3 ms with the fix). Make the statements match the index.
  local meta="$build/internal/backends/sqlite/metadata/metadata.go"
  sed -i "s|IDColumn = DefaultColumn + \"->'\\\$._id'\"|IDColumn = DefaultColumn + \`->\"_id\"\`|" "$meta"
  grep -q 'IDColumn = DefaultColumn + `->"_id"`' "$meta" \
    || { log "could not apply the _id index fix to FerretDB (source changed?)"; exit 1; }
  mkdir -p "$TOOLS/bin"
  # GOTOOLCHAIN=local: build with the Go checked above, never fetch another toolchain.
  if ! (cd "$build" && GOTOOLCHAIN=local go build -trimpath -o "$FERRETDB_BIN.tmp" ./cmd/ferretdb); then
    rm -rf "$build"; log "building FerretDB $FERRETDB_VERSION failed (the go output is above)"; exit 1
  fi
  mv "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
  rm -rf "$build"
}

wait_for() { # name, seconds, command...
  local name=$1 limit=$2; shift 2
  for _ in $(seq 1 "$limit"); do "$@" && { log "$name is up"; return 0; }; sleep 1; done
  log "$name did not come up within ${limit}s"; return 1
}

start_rabbitmq() {
  if port_open "$AMQP_PORT"; then log "rabbitmq already answers on $AMQP_PORT"; return; fi
  install_rabbitmq
  log "starting rabbitmq on 127.0.0.1:$AMQP_PORT"
  # Everything on loopback, the Erlang distribution port included. The Debian wrapper
  # re-executes as the rabbitmq user when called as root; the environment goes along.
  as_root env RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$AMQP_PORT" ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    rabbitmq-server -detached
  wait_for rabbitmq 120 port_open "$AMQP_PORT"
  as_root rabbitmqctl await_startup --timeout 120 >/dev/null
}

# A database file whose creation was cut short (server killed in between) has no tables, and
# FerretDB then refuses to start ("no such table: _ferretdb_collections"). Such a file holds no
# data: move it aside.
set_aside_unfinished_databases() {
  python3 - "$1" <<'PY'
import pathlib, sqlite3, sys
for path in pathlib.Path(sys.argv[1]).glob("*.sqlite"):
    with sqlite3.connect(path) as db:
        tables = db.execute("select count(*) from sqlite_master where type = 'table'").fetchone()[0]
    if not tables:
        path.rename(path.with_name(path.name + ".unfinished"))
        print(f"[services] set aside {path.name}: a database with no tables")
PY
}

start_ferretdb() {
  if port_open "$MONGO_PORT"; then log "ferretdb already answers on $MONGO_PORT"; return; fi
  install_ferretdb
  mkdir -p "$STATE/ferretdb"
  set_aside_unfinished_databases "$STATE/ferretdb"
  log "starting ferretdb on 127.0.0.1:$MONGO_PORT (data in $STATE/ferretdb)"
  # WAL with synchronous=NORMAL: survives a crash of any process (what our tests do to it);
  # only an OS crash could lose the last commits. A local stand-in; production runs MongoDB.
  # In a session of its own (setsid): a Ctrl-C in the terminal that ran `make run` reaches
  # make's process group, not the server. The shell writes its own pid, then becomes it.
  setsid sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$STATE/ferretdb.pid" \
    "$FERRETDB_BIN" --handler=sqlite --sqlite-url="file:$STATE/ferretdb/?_pragma=synchronous(normal)" \
    --listen-addr="127.0.0.1:$MONGO_PORT" --telemetry=disable --log-level=warn \
    --debug-addr=- --state-dir="$STATE/ferretdb" \
    >>"$STATE/ferretdb.log" 2>&1 </dev/null &
  wait_for ferretdb 60 port_open "$MONGO_PORT"
}

# Whether `pid` is still our FerretDB: a pid file outlives its process, and the number may
# since name another process, which must not be signalled.
is_our_ferretdb() {
  local pid=$1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' '\n' <"/proc/$pid/cmdline" | head -1 | grep -qF "$FERRETDB_BIN"
}

stop_all() {
  if [ -f "$STATE/ferretdb.pid" ]; then
    local pid; pid=$(cat "$STATE/ferretdb.pid")
    if is_our_ferretdb "$pid"; then
      kill "$pid"; log "ferretdb stopped"
    else
      log "ferretdb was not running (pid file named $pid, not our server: left alone)"
    fi
    rm -f "$STATE/ferretdb.pid"
  fi
  if command -v rabbitmqctl >/dev/null 2>&1 && port_open "$AMQP_PORT"; then
    as_root rabbitmqctl stop >/dev/null 2>&1 || true; log "rabbitmq stopped"
  fi
}

mkdir -p "$STATE"
case "${1:-start}" in
  start) start_rabbitmq & r=$!; start_ferretdb & f=$!; wait $r; wait $f ;;
  stop) stop_all ;;
  install-rabbitmq) install_rabbitmq ;;  # deploy/cluster.sh runs its nodes from the same package
  status) port_open "$AMQP_PORT" && echo "rabbitmq: up" || echo "rabbitmq: down"
          port_open "$MONGO_PORT" && echo "ferretdb: up" || echo "ferretdb: down" ;;
  *) echo "usage: $0 [start|stop|status|install-rabbitmq]" >&2; exit 2 ;;
esac
