#!/usr/bin/env bash
# make lint: the packages' one-way direction (docs/architecture.md).
#   http → domain ← store → outbox;  relay → domain, outbox;  cmd/api wires them.
# Each rule names the packages a package may not depend on, directly or not
# (test files aside: tests may reach across to set things up).
set -euo pipefail
cd "$(dirname "$0")/.."
mod=github.com/safeflow/safeflow
fail=0

# deps PKG: every non-standard package PKG depends on.
deps() { go list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' "$1"; }

# forbid PKG REGEX WHY: fail when a dependency of PKG matches REGEX.
forbid() {
  local bad
  bad=$(deps "$1" | grep -E "$2" || true)
  if [[ -n "$bad" ]]; then
    echo "$1 must not depend on $3; it does on:"; echo "$bad" | sed 's/^/  /'; fail=1
  fi
}

# only PKG REGEX WHY: fail when a dependency of PKG (other than itself) does not match REGEX.
only() {
  local bad
  bad=$(deps "$1" | grep -v -x -F "$mod/${1#./}" | grep -v -E "$2" || true)
  if [[ -n "$bad" ]]; then
    echo "$1 may depend on $3 only; it also does on:"; echo "$bad" | sed 's/^/  /'; fail=1
  fi
}

only   ./internal/domain   '^$'                                                  "the standard library"
only   ./client            "^$mod/internal/backoff$"                             "the standard library and the retry schedule (it is for programs that call safeflow)"
only   ./internal/outbox   '^github.com/jackc/|^golang.org/x/text/'             "pgx (and the standard library)"
forbid ./internal/http     "^github.com/jackc/pgx|^$mod/internal/(store|relay|outbox)$" "pgx or the database packages (it talks to the store through its Store interface)"
for p in store relay outbox periodic domain; do
  forbid ./internal/$p     "^$mod/internal/http$|^github.com/go-chi/"             "the HTTP layer"
done
forbid ./internal/store    "^$mod/internal/relay$"                                 "the relay (the relay is a worker beside it)"
exit $fail
