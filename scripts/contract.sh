#!/usr/bin/env bash
# make contract: a real client against the real binary. With the tools
# pinned in tools/contract (package-lock.json): Redocly lints openapi.yaml;
# the Postman collection kept in postman/ must be what Portman makes of the
# spec now; then the built binary runs on a free port with a fresh database
# and API key, and Newman runs Portman's contract tests against it (every
# operation: status, content type, JSON body, schema; ids chained from
# create to get to transition). Any failed assertion fails the build.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=tools/contract
bin=$tools/node_modules/.bin
command -v npm >/dev/null || { echo "contract: npm is missing (apt-get install nodejs npm; .ci/run installs it)"; exit 1; }
(cd $tools && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

$bin/redocly lint openapi.yaml

# The kept collection is the spec's: regenerate it and compare, the ids
# Postman draws at random aside.
gen=$(mktemp -d)
$bin/portman -l openapi.yaml -c $tools/portman-config.json -o "$gen/collection.json" >/dev/null
node $tools/same-collection.js postman/safeflow.postman_collection.json "$gen/collection.json" ||
  { echo "contract: postman/safeflow.postman_collection.json is not what openapi.yaml makes now: run make postman"; exit 1; }

ADMIN=${CONTRACT_ADMIN_URL:-postgres://root@127.0.0.1:5432/postgres?sslmode=disable}
[[ "$ADMIN" == *"@127.0.0.1:5432/"* ]] && scripts/ensure-postgres.sh
db=safeflow_contract_$$
DB_URL=${ADMIN/\/postgres\?/\/$db?}
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
API=
cleanup() {
  [[ -n "$API" ]] && kill "$API" 2>/dev/null && wait "$API" 2>/dev/null || true
  psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$gen"
}
trap cleanup EXIT
DATABASE_URL=$DB_URL ./bin/api migrate up >/dev/null
key=$(DATABASE_URL=$DB_URL ./bin/api apikey create --tenant contract)
# hooks.example.com cannot be resolved here: the spec's example endpoint is
# accepted with WEBHOOK_ALLOW_PRIVATE (deliveries to it just fail).
DATABASE_URL=$DB_URL HTTP_ADDR=127.0.0.1:$port LOG_LEVEL=warn WEBHOOK_ALLOW_PRIVATE=true RELAY_ENABLED=false ./bin/api serve &
API=$!
for _ in $(seq 1 100); do HTTP_ADDR=127.0.0.1:$port ./bin/api healthcheck 2>/dev/null && break; sleep 0.1; done

sed "s|{{SAFEFLOW_KEY}}|$key|" $tools/portman-config.json > "$gen/config.json"
$bin/portman -l openapi.yaml -b "http://127.0.0.1:$port" -c "$gen/config.json" -o "$gen/run.json" >/dev/null
$bin/newman run "$gen/run.json" --reporters cli --color off
