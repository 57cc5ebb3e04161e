#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432 and lets the user root in
# without a password, as on our machines: starts the cluster when it is down,
# and installs PostgreSQL with apt-get when it is missing.
set -euo pipefail

answers() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }

if ! answers; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "ensure-postgres: PostgreSQL is not installed; installing it with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
  fi
  ver=$(ls /etc/postgresql | sort -n | tail -n 1)
  echo "ensure-postgres: starting PostgreSQL $ver" >&2
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  for _ in $(seq 1 30); do answers && break; sleep 1; done
  answers || { echo "ensure-postgres: PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
fi

# A fresh install has no role root and asks for passwords over TCP.
if ! psql -h 127.0.0.1 -U root -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
  echo "ensure-postgres: allowing root in over 127.0.0.1 (trust), as on our machines" >&2
  hba=$(su postgres -c "psql -Atqc 'show hba_file'")
  tmp=$(mktemp)
  printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' > "$tmp"
  cat "$hba" >> "$tmp"
  cat "$tmp" > "$hba" && rm -f "$tmp"
  su postgres -c "psql -qc 'select pg_reload_conf()'" >/dev/null
  su postgres -c "psql -qc 'CREATE ROLE root SUPERUSER LOGIN'" 2>/dev/null || true
  psql -h 127.0.0.1 -U root -d postgres -Atqc 'select 1' >/dev/null
fi
