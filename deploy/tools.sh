#!/usr/bin/env bash
# Install (once) the tools the deploy tests use; print nothing when all are there.
# (podman-compose is pinned in the project's dev dependencies: Debian's 1.0.3 has no `config`.)
#   deploy/tools.sh containers   podman, buildah, runc, catatonit, debootstrap (Debian)
#   deploy/tools.sh promtool     promtool, from Debian's prometheus package
#   deploy/tools.sh helm         helm, built from the Go module proxy at $HELM_VERSION
#   deploy/tools.sh asyncapi     the AsyncAPI CLI, from the npm registry at $ASYNCAPI_VERSION
#   deploy/tools.sh chromium     headless Chromium from Debian (the console's browser tests)
#   deploy/tools.sh vegeta       vegeta, the benchmark's open-loop HTTP client, at $VEGETA_VERSION
#   deploy/tools.sh all          every one of them (default)
#   deploy/tools.sh helm-path    print the helm binary's path
#   deploy/tools.sh asyncapi-path  print the AsyncAPI CLI's path
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=deploy/gomodule.sh
. "$HERE/gomodule.sh"
TOOLS=${HH_TOOLS_DIR:-$HOME/.local/hh-tools}
HELM_VERSION=v3.22.0
HELM_BIN=$TOOLS/bin/helm-$HELM_VERSION
VEGETA_VERSION=v12.13.0
VEGETA_BIN=$TOOLS/bin/vegeta-$VEGETA_VERSION
ASYNCAPI_VERSION=6.2.0
ASYNCAPI_DIR=$TOOLS/asyncapi-cli-$ASYNCAPI_VERSION
ASYNCAPI_BIN=$ASYNCAPI_DIR/node_modules/.bin/asyncapi

log() { printf '[tools] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

debian() { # command-that-must-exist package...
  local command=$1; shift
  type -P "$command" >/dev/null 2>&1 && return  # a file on PATH: not our function of that name
  log "installing $* from Debian"
  as_root apt-get update -qq
  # --no-install-recommends: prometheus alone, without its exporters and web assets.
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" \
    >/dev/null
}

containers() {
  debian podman podman buildah runc catatonit uidmap
  debian debootstrap debootstrap
}

promtool() {
  debian promtool prometheus
  # The package starts a Prometheus server where an init system lets it; we only want promtool.
  as_root pkill -x prometheus 2>/dev/null || true
}

helm() {
  [ -x "$HELM_BIN" ] && return
  command -v go >/dev/null 2>&1 || { log "Go is needed to build helm $HELM_VERSION"; exit 1; }
  log "building helm $HELM_VERSION from the Go module proxy (about a minute, once)"
  local build
  build=$(go_module_copy helm.sh/helm/v3 "$HELM_VERSION") \
    || { log "could not download helm $HELM_VERSION"; exit 1; }
  mkdir -p "$TOOLS/bin"
  if ! (cd "$build" && GOTOOLCHAIN=local go build -trimpath -o "$HELM_BIN.tmp" \
          -ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" ./cmd/helm); then
    rm -rf "$build"; log "building helm $HELM_VERSION failed (the go output is above)"; exit 1
  fi
  mv "$HELM_BIN.tmp" "$HELM_BIN"
  rm -rf "$build"
}

vegeta() {
  [ -x "$VEGETA_BIN" ] && return
  command -v go >/dev/null 2>&1 || { log "Go is needed to build vegeta $VEGETA_VERSION"; exit 1; }
  log "building vegeta $VEGETA_VERSION from the Go module proxy (once)"
  local build
  build=$(go_module_copy github.com/tsenart/vegeta/v12 "$VEGETA_VERSION") \
    || { log "could not download vegeta $VEGETA_VERSION"; exit 1; }
  mkdir -p "$TOOLS/bin"
  if ! (cd "$build" && GOTOOLCHAIN=local go build -trimpath -ldflags "-X main.Version=$VEGETA_VERSION" -o "$VEGETA_BIN.tmp" .); then
    rm -rf "$build"; log "building vegeta $VEGETA_VERSION failed (the go output is above)"; exit 1
  fi
  mv "$VEGETA_BIN.tmp" "$VEGETA_BIN"
  rm -rf "$build"
}

asyncapi() {
  [ -x "$ASYNCAPI_BIN" ] && return
  command -v npm >/dev/null 2>&1 || { log "npm is needed to install the AsyncAPI CLI"; exit 1; }
  log "installing @asyncapi/cli@$ASYNCAPI_VERSION from the npm registry (about a minute, once)"
  mkdir -p "$ASYNCAPI_DIR"
  (cd "$ASYNCAPI_DIR" && npm install --no-audit --no-fund --loglevel=error \
     "@asyncapi/cli@$ASYNCAPI_VERSION" >/dev/null) \
    || { rm -rf "$ASYNCAPI_DIR"; log "installing the AsyncAPI CLI failed"; exit 1; }
  # It would send usage metrics (and print why it cannot): off, once for this user.
  SUPPRESS_NO_CONFIG_WARNING=1 "$ASYNCAPI_BIN" config analytics --disable >/dev/null 2>&1 || true
}

case "${1:-all}" in
  containers) containers ;;
  promtool) promtool ;;
  helm) helm ;;
  helm-path) printf '%s\n' "$HELM_BIN" ;;
  asyncapi) asyncapi ;;
  chromium) debian chromium chromium ;;
  asyncapi-path) printf '%s\n' "$ASYNCAPI_BIN" ;;
  vegeta) vegeta ;;
  vegeta-path) printf '%s\n' "$VEGETA_BIN" ;;
  all) containers; promtool; helm; asyncapi; debian chromium chromium ;;
  *) echo "usage: $0 [containers|promtool|helm|asyncapi|chromium|vegeta|all|helm-path|asyncapi-path|vegeta-path]" >&2; exit 2 ;;
esac
