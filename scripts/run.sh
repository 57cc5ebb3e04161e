#!/usr/bin/env bash
# make run: database created if missing, migrations applied, a fresh API key
# for tenant "demo", a curl to paste, then the service in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "$DATABASE_URL" == *"@127.0.0.1:5432/"* || "$DATABASE_URL" == *"@localhost:5432/"* ]]; then
  scripts/ensure-postgres.sh
fi
./bin/api migrate up >/dev/null
key=$(./bin/api apikey create --tenant demo)
port=${HTTP_ADDR##*:}
base="http://localhost:${port:-8080}"
cat <<MSG

  safeflow on $base — database migrated, API key for tenant "demo":

    export SAFEFLOW_KEY=$key

  Open an account (paste this in another terminal):

    curl -s -X POST $base/v1/accounts \\
      -H "Authorization: Bearer $key" \\
      -H "Idempotency-Key: $(cat /proc/sys/kernel/random/uuid)" \\
      -H "Content-Type: application/json" \\
      -d '{"currency":"USD","name":"Alice"}'

  Watch the webhooks arrive (in a third terminal; Ctrl-C removes its endpoint):

    SAFEFLOW_KEY=$key ./bin/api listen --api $base

  The README walks through deposits, withdrawals, replays and the ledger. Ctrl-C stops.

MSG
# Local development: webhooks may go to 127.0.0.1, so that `api listen`
# (or any local receiver) works. Set WEBHOOK_ALLOW_PRIVATE=false to refuse.
export WEBHOOK_ALLOW_PRIVATE=${WEBHOOK_ALLOW_PRIVATE:-true}
exec ./bin/api serve
