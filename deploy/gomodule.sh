# Sourced by the deploy scripts. go_module_copy MODULE VERSION: a writable copy of the module's
# source, fetched from the Go module proxy (printed: the folder; the caller removes it). A
# command is built from its own module, as its release build does: `go install pkg@version`
# would ask the proxy for the version list, which is refused on these machines.
go_module_copy() {
  local src build
  src=$(cd /tmp && go mod download -json "$1@$2" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$src" ] || return 1
  build=$(mktemp -d)
  cp -r "$src/." "$build" && chmod -R u+w "$build"
  printf '%s\n' "$build"
}
