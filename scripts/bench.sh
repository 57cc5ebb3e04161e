#!/usr/bin/env bash
# make bench: the safe flow over HTTP (cmd/loadgen) and, as the baseline on
# the same PostgreSQL server in the same run, pgbench's built-in tpcb-like
# script at the same client count. Figures are noisy on small machines:
# compare ratios within one run, not absolute numbers across runs.
set -euo pipefail
cd "$(dirname "$0")/.."

C=${BENCH_CLIENTS:-16}
D=${BENCH_DURATION:-10s}
PORT=${BENCH_PORT:-18090}
ADMIN=${BENCH_ADMIN_URL:-postgres://root@127.0.0.1:5432/postgres?sslmode=disable}
DB_URL=${ADMIN/\/postgres\?/\/safeflow_bench?}
PG_URL=${ADMIN/\/postgres\?/\/safeflow_pgbench?}

[[ "$ADMIN" == *"@127.0.0.1:5432/"* ]] && scripts/ensure-postgres.sh
psql "$ADMIN" -qc 'DROP DATABASE IF EXISTS safeflow_bench WITH (FORCE)' -c 'DROP DATABASE IF EXISTS safeflow_pgbench WITH (FORCE)' -c 'CREATE DATABASE safeflow_pgbench'
go build -o bin/loadgen ./cmd/loadgen

DATABASE_URL=$DB_URL ./bin/api migrate up >/dev/null
KEY=$(DATABASE_URL=$DB_URL ./bin/api apikey create --tenant bench)
# The API runs its relay in-process (the default); the relay scenario's
# receiver listens on 127.0.0.1, hence WEBHOOK_ALLOW_PRIVATE.
DATABASE_URL=$DB_URL HTTP_ADDR=127.0.0.1:$PORT LOG_LEVEL=error WEBHOOK_ALLOW_PRIVATE=true ./bin/api serve &
API=$!
trap 'kill $API 2>/dev/null; wait $API 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/{print $2}') GiB;" \
  "$(psql "$ADMIN" -Atc 'show server_version') on the same host; $C clients, $D per scenario"
secs=${D%s}
pgbench -i -q -s 10 "$PG_URL" >/dev/null 2>&1
# busy: CPU ticks the whole machine spent (user, nice, system, irq, softirq).
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat; }
# pgb runs pgbench and prints its tps; it also records in $pgcost the CPU
# PostgreSQL spent per pgbench transaction (the machine's CPU minus pgbench's own).
pgb() {
  local b0 b1 res own
  b0=$(busy)
  res=$( { TIMEFORMAT='%U %S'; time pgbench -n -c "$C" -j 2 -T "${secs%.*}" "$PG_URL" 2>/dev/null | awk '/^(tps|number of transactions actually processed)/' ; } 2>&1 )
  b1=$(busy)
  own=$(echo "$res" | tail -1 | awk '{print $1+$2}')
  local txs tps; txs=$(echo "$res" | awk -F': ' '/number of transactions/ {split($2,a,"/"); print a[1]}'); tps=$(echo "$res" | awk '/^tps/ {print int($3)}')
  echo "$(echo "($b1-$b0)/$(getconf CLK_TCK) - $own" | bc -l) $txs" > "$pgcost_file"
  echo "$tps"
}
pgcost_file=$(mktemp)
tps1=$(pgb)
read -r pg_cpu1 pg_tx1 < "$pgcost_file"
echo
out=$(mktemp)
# CPU split: clock ticks used by the api process, by every postgres process
# and by the load generator during each scenario, as a share of the machine
# (processes that start and end within a scenario are not counted).
HZ=$(getconf CLK_TCK); NCPU=$(nproc)
ticks() { local t=0; for p in "$@"; do [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
pg_ticks() { ticks $(pgrep -x postgres); }
run_split() { # run_split LABEL CMD...: runs CMD (a loadgen) and prints the CPU split
  local a0 p0 t0 a1 p1 t1 secs lg o
  local m0 m1 reqs
  a0=$(ticks $API); p0=$(pg_ticks); m0=$(busy); t0=$(date +%s.%N)
  o=$("${@:2}"); echo "$o" | grep -v '^loadgen-cpu='; echo "$o" >> "$out"
  lg=$(echo "$o" | grep -o 'loadgen-cpu=[0-9.]*' | cut -d= -f2)
  a1=$(ticks $API); p1=$(pg_ticks); m1=$(busy); t1=$(date +%s.%N)
  reqs=$(echo "$o" | grep -o 'requests=[0-9]*' | head -1 | cut -d= -f2)
  secs=$(echo "$t1 - $t0" | bc -l)
  printf '%-18s cpu: api %.0f%%, postgres %.0f%%, loadgen %.0f%% of %d cores (wall %.1fs)\n' "$1" \
    "$(echo "100*($a1-$a0)/$HZ/$secs/$NCPU" | bc -l)" "$(echo "100*($p1-$p0)/$HZ/$secs/$NCPU" | bc -l)" \
    "$(echo "100*${lg:-0}/$secs/$NCPU" | bc -l)" "$NCPU" "$secs"
  if [ -n "$reqs" ] && [ "$reqs" -gt 0 ]; then # the machine's CPU minus the api's and the generator's: PostgreSQL's
    printf '%-18s postgres CPU per request %.0f µs\n' "$1" \
      "$(echo "1000000*(($m1-$m0-($a1-$a0))/$HZ - ${lg:-0})/$reqs" | bc -l)"
  fi
}
for s in ${BENCH_SCENARIOS:-deposits-spread deposits-hot withdrawals replays payments payments-merchant overload}; do
  [[ $s == relay ]] && continue
  if [[ $s == overload ]]; then
    # Open-loop load at 3x the saturation just measured (deposits-spread).
    sat=$(awk '$1 == "deposits-spread" { for (i=1;i<=NF;i++) if ($i ~ /^req\/s=/) { split($i,a,"="); print int(a[2]) } }' "$out")
    rate=${BENCH_OVERLOAD_RATE:-$(( 3 * ${sat:-1000} ))}
    ./bin/loadgen -url "http://127.0.0.1:$PORT" -key "$KEY" -db "$DB_URL" -scenario overload -rate "$rate" -c "$C" -d "$D"
    continue
  fi
  run_split "$s" ./bin/loadgen -url "http://127.0.0.1:$PORT" -key "$KEY" -db "$DB_URL" -scenario $s -c "$C" -d "$D"
done

# The relay: deposits at a steady rate with one webhook endpoint (latency),
# then as fast as the clients go (does delivery keep up with writing?).
if [[ -z "${BENCH_SCENARIOS:-}" || "${BENCH_SCENARIOS:-}" == *relay* ]]; then
  for rate in ${BENCH_RELAY_RATE:-300} 0; do
    ./bin/loadgen -url "http://127.0.0.1:$PORT" -key "$KEY" -db "$DB_URL" -scenario relay -rate "$rate" -c "$C" -d "$D"
  done
fi

tps2=$(pgb)
read -r pg_cpu2 pg_tx2 < "$pgcost_file"
printf 'pgbench: PostgreSQL CPU per transaction %.0f µs (the machine'"'"'s CPU during pgbench minus pgbench'"'"'s own)\n' \
  "$(echo "1000000*($pg_cpu1+$pg_cpu2)/($pg_tx1+$pg_tx2)" | bc -l)"
tps=$(( (tps1 + tps2) / 2 ))
echo "pgbench tpcb-like c=$C tps=$tps (mean of $tps1 before and $tps2 after the scenarios; 5 statements a transaction, no HTTP)"
echo
awk -v tps="$tps" '{ for (i=1;i<=NF;i++) if ($i ~ /^req\/s=/) { split($i,a,"=");
  extra = ($1 ~ /^payments/) ? sprintf("   (%d payments/s created and confirmed: %.2f x pgbench tps)", a[2]/2, a[2]/2/tps) : "";
  printf "%-18s %6.2f x pgbench tps%s\n", $1, a[2]/tps, extra } }' "$out"
rm -f "$out"
