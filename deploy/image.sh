#!/usr/bin/env bash
# Build the hh-callbacks image here with buildah, and run containers with podman.
#   deploy/image.sh base     make the local base image from Debian's packages (once)
#   deploy/image.sh build    build the image (default; makes the base first)
#   deploy/image.sh env      print the environment podman needs (eval it)
# No public image can be pulled on these machines, so the Dockerfile's conventional base
# (python:3.11-slim) is replaced by a local one, made with debootstrap from the apt source the
# machine already uses. The image is tagged $IMAGE.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export CONTAINERS_CONF=$HERE/containers/containers.conf
BASE=${HH_BASE_IMAGE:-localhost/hh-base:bookworm}
IMAGE=${HH_IMAGE:-localhost/hh-callbacks:dev}

log() { printf '[image] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

# The first deb URI and suite of the machine's own apt sources (deb822 or one-line format).
debian_mirror() {
  local uri
  uri=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources \
        2>/dev/null | grep -v security | head -n1 || true)
  [ -n "$uri" ] || uri=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\(http[^[:space:]]*\).*/\2/p' \
        /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 || true)
  printf '%s' "${uri:-http://deb.debian.org/debian}"
}

base() {
  "$HERE/tools.sh" containers
  if podman image exists "$BASE"; then log "base $BASE exists"; return; fi
  local root mirror started
  root=$(mktemp -d) mirror=$(debian_mirror) started=$(date +%s)
  log "making base $BASE with debootstrap from $mirror (a few minutes, once)"
  # python3 and venv are all the runtime needs; ca-certificates for TLS to the gateway.
  as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$mirror" >/dev/null
  as_root chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
         "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar -C "$root" -c . | podman import -q --change 'CMD ["python3"]' - "$BASE" >/dev/null
  as_root rm -rf "$root"
  log "base $BASE made in $(( $(date +%s) - started ))s"
}

build() {
  base
  local started version
  started=$(date +%s)
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n1)
  log "building $IMAGE from $BASE"
  local secret=()  # this machine's CA bundle, for an intercepting proxy to PyPI
  local ca=${PIP_CERT:-${SSL_CERT_FILE:-}}
  [ -n "$ca" ] && [ -f "$ca" ] && secret=(--secret "id=pip-ca,src=$ca")
  buildah bud --isolation chroot --layers "${secret[@]}" --build-arg "BASE=$BASE" \
    --build-arg "VERSION=$version" --build-arg "REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
    -f "$HERE/Dockerfile" -t "$IMAGE" "$ROOT" >&2
  log "built $IMAGE in $(( $(date +%s) - started ))s;" \
      "size $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.1f MB", $1/1e6}')"
}

case "${1:-build}" in
  base) base ;;
  build) build ;;
  env) printf 'export CONTAINERS_CONF=%q\n' "$CONTAINERS_CONF" ;;
  *) echo "usage: $0 [base|build|env]" >&2; exit 2 ;;
esac
