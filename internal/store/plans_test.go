package store_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/safeflow/safeflow/internal/relay"
	"github.com/safeflow/safeflow/internal/store"
	"github.com/safeflow/safeflow/internal/testdb"
)

// seedBigTenant writes, in 20 transactions, a tenant with 100,000 accounts,
// 500,000 deposits (1,000,000 ledger lines), 20,000 pending payments, their
// 620,000 events and as many delivered deliveries to one endpoint (the last
// transaction's left pending), and 100,000 idempotency keys, 1% expired (the janitor runs every minute).
// The rows keep the invariants of product.md §6 but for the stored
// creations (the keys are not the resources' own: KeysPurged).
const seedBigTenant = `
INSERT INTO tenants (id, name) VALUES ('ten_big', 'big');
INSERT INTO accounts (id, tenant_id, kind, currency, created_at) VALUES ('acct_big_system', 'ten_big', 'system', 'USD', now() - interval '2 days');
INSERT INTO webhook_endpoints (id, tenant_id, url, secret, created_at) VALUES ('we_big', 'ten_big', 'https://hooks.example.com/big', 'whsec_x', now() - interval '2 days');
ALTER TABLE events DISABLE TRIGGER events_fan_out;
-- next statement
DO $$
DECLARE b int;
BEGIN
  FOR b IN 0..19 LOOP
    INSERT INTO accounts (id, tenant_id, kind, currency, available, held, incoming, created_at)
    SELECT 'acct_big_' || lpad(i::text, 7, '0'), 'ten_big', 'customer', 'USD',
           CASE WHEN i % 5 = 0 THEN 9 ELSE 10 END, CASE WHEN i % 5 = 0 THEN 1 ELSE 0 END, 0, now() - interval '1 day'
    FROM generate_series(b * 5000, b * 5000 + 4999) i;
    INSERT INTO movements (id, tenant_id, kind, account_id, amount, currency, journal_id, created_at)
    SELECT 'dep_' || lpad(i::text, 7, '0') || '_' || k, 'ten_big', 'deposit', 'acct_big_' || lpad(i::text, 7, '0'), 2, 'USD',
           'jnl_d_' || lpad(i::text, 7, '0') || '_' || k, now() - interval '1 day'
    FROM generate_series(b * 5000, b * 5000 + 4999) i, generate_series(1, 5) k;
    INSERT INTO ledger_entries (id, tenant_id, journal_id, account_id, book, amount, currency, created_at)
    SELECT 'le_' || m.id || '_' || side, 'ten_big', m.journal_id, CASE side WHEN 1 THEN m.account_id ELSE 'acct_big_system' END,
           'available', CASE side WHEN 1 THEN 2 ELSE -2 END, 'USD', m.created_at
    FROM movements m, generate_series(1, 2) side
    WHERE m.tenant_id = 'ten_big' AND m.id >= 'dep_' || lpad((b * 5000)::text, 7, '0') AND m.id < 'dep_' || lpad((b * 5000 + 5000)::text, 7, '0');
    INSERT INTO payments (id, tenant_id, status, amount, currency, payer_account_id, payee_account_id, version, created_at, updated_at)
    SELECT 'pay_big_' || lpad(i::text, 7, '0'), 'ten_big', 'pending', 1, 'USD', 'acct_big_' || lpad(i::text, 7, '0'),
           'acct_big_' || lpad((i + 1)::text, 7, '0'), 1, now() - interval '1 day', now() - interval '1 day'
    FROM generate_series(b * 5000, b * 5000 + 4999, 5) i;
    INSERT INTO payment_transitions (payment_id, version, tenant_id, action, to_status, journal_id, created_at)
    SELECT 'pay_big_' || lpad(i::text, 7, '0'), 1, 'ten_big', 'create', 'pending', 'jnl_p_' || lpad(i::text, 7, '0'), now() - interval '1 day'
    FROM generate_series(b * 5000, b * 5000 + 4999, 5) i;
    INSERT INTO ledger_entries (id, tenant_id, journal_id, account_id, book, amount, currency, created_at)
    SELECT 'le_p_' || lpad(i::text, 7, '0') || '_' || book, 'ten_big', 'jnl_p_' || lpad(i::text, 7, '0'), 'acct_big_' || lpad(i::text, 7, '0'),
           book, CASE book WHEN 'available' THEN -1 ELSE 1 END, 'USD', now() - interval '1 day'
    FROM generate_series(b * 5000, b * 5000 + 4999, 5) i, unnest(ARRAY['available', 'held']) book;
    WITH ev AS (
        INSERT INTO events (id, tenant_id, type, aggregate_type, aggregate_id, sequence, payload, created_at, feed_xid)
        SELECT 'evt_a_' || lpad(i::text, 7, '0'), 'ten_big', 'account.created', 'account', 'acct_big_' || lpad(i::text, 7, '0'), 1, '{}'::bytea, now() - interval '1 day', pg_current_xact_id()
        FROM generate_series(b * 5000, b * 5000 + 4999) i
        UNION ALL
        SELECT 'evt_d_' || lpad(i::text, 7, '0') || '_' || k, 'ten_big', 'deposit.created', 'deposit', 'dep_' || lpad(i::text, 7, '0') || '_' || k, 1, '{}'::bytea, now() - interval '1 day', pg_current_xact_id()
        FROM generate_series(b * 5000, b * 5000 + 4999) i, generate_series(1, 5) k
        UNION ALL
        SELECT 'evt_p_' || lpad(i::text, 7, '0'), 'ten_big', 'payment.created', 'payment', 'pay_big_' || lpad(i::text, 7, '0'), 1, '{}'::bytea, now() - interval '1 day', pg_current_xact_id()
        FROM generate_series(b * 5000, b * 5000 + 4999, 5) i
        RETURNING id, created_at)
    INSERT INTO webhook_deliveries (id, tenant_id, event_id, endpoint_id, status, attempts, next_attempt_at, last_status_code, delivered_at, finished_at, created_at)
    SELECT 'del_' || substr(ev.id, 5), 'ten_big', ev.id, 'we_big',
           CASE WHEN b = 19 AND ev.id LIKE 'evt_a_%' THEN 'pending' ELSE 'delivered' END,
           CASE WHEN b = 19 AND ev.id LIKE 'evt_a_%' THEN 0 ELSE 1 END,
           CASE WHEN b = 19 AND ev.id LIKE 'evt_a_%' THEN now() END,
           CASE WHEN b = 19 AND ev.id LIKE 'evt_a_%' THEN NULL ELSE 200 END,
           CASE WHEN b = 19 AND ev.id LIKE 'evt_a_%' THEN NULL ELSE ev.created_at + interval '1 second' END,
           CASE WHEN b = 19 AND ev.id LIKE 'evt_a_%' THEN NULL ELSE ev.created_at + interval '1 second' END,
           ev.created_at
    FROM ev;
    COMMIT;
  END LOOP;
END $$;
-- next statement
ALTER TABLE events ENABLE TRIGGER events_fan_out;
INSERT INTO idempotency_keys (tenant_id, key, fingerprint, status_code, expires_at)
SELECT 'ten_big', 'key-' || i, '\x00', 201, now() + CASE WHEN i % 100 = 0 THEN interval '-1 minute' ELSE interval '1 hour' END
FROM generate_series(1, 100000) i;
ANALYZE;`

// bigTables are those a hot query must never scan whole.
var bigTables = []string{"accounts", "movements", "ledger_entries", "payments", "payment_transitions", "events", "webhook_deliveries", "idempotency_keys"}

// On a large tenant every hot query uses the index meant for it and scans
// no big table whole: EXPLAIN (FORMAT JSON) of each, with the arguments it
// runs with.
func TestHotQueriesUseTheirIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	start := time.Now()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Seeding takes longer than the service's statement_timeout. The DO
	// commits once per loop, so it must be a statement of its own.
	for _, part := range append([]string{"SET statement_timeout = 0"}, strings.Split(seedBigTenant, "-- next statement\n")...) {
		if _, err := conn.Exec(ctx, part); err != nil {
			t.Fatalf("seed: %v", err)
		}
	}
	_, _ = conn.Exec(ctx, "RESET statement_timeout")
	conn.Release()
	t.Logf("seeded in %v", time.Since(start).Round(time.Second))
	type hot struct {
		name, sql, index string
		args             []any
	}
	var queries []hot
	for _, q := range store.HotQueries() {
		queries = append(queries, hot{q.Name, q.SQL, q.Index, q.Args})
	}
	for _, q := range relay.HotQueries() {
		queries = append(queries, hot{q.Name, q.SQL, q.Index, q.Args})
	}
	for _, q := range queries {
		var plan []byte
		tx, err := pool.Begin(ctx) // EXPLAIN of a DELETE or UPDATE plans it only; roll back anyway
		if err != nil {
			t.Fatal(err)
		}
		err = tx.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+q.sql, q.args...).Scan(&plan)
		_ = tx.Rollback(ctx)
		if err != nil {
			t.Errorf("%s: explain: %v", q.name, err)
			continue
		}
		var doc []struct{ Plan map[string]any }
		if err := json.Unmarshal(plan, &doc); err != nil || len(doc) != 1 {
			t.Fatalf("%s: plan %s: %v", q.name, plan, err)
		}
		indexes, seqScans := map[string]bool{}, []string{}
		var walk func(n map[string]any)
		walk = func(n map[string]any) {
			if name, ok := n["Index Name"].(string); ok {
				indexes[name] = true
			}
			if arbiters, ok := n["Conflict Arbiter Indexes"].([]any); ok { // INSERT … ON CONFLICT
				for _, a := range arbiters {
					indexes[a.(string)] = true
				}
			}
			if n["Node Type"] == "Seq Scan" {
				rel, _ := n["Relation Name"].(string)
				for _, big := range bigTables {
					if rel == big {
						seqScans = append(seqScans, rel)
					}
				}
			}
			if kids, ok := n["Plans"].([]any); ok {
				for _, k := range kids {
					if m, ok := k.(map[string]any); ok {
						walk(m)
					}
				}
			}
		}
		walk(doc[0].Plan)
		used := false
		for _, want := range strings.Split(q.index, "|") {
			used = used || indexes[want]
		}
		if !used || len(seqScans) > 0 {
			t.Errorf("%s: uses indexes %v and scans %v whole; want %s and no scan of a big table\n%s", q.name, keys(indexes), seqScans, q.index, plan)
		}
	}
	testdb.CheckInvariants(t, pool, testdb.KeysPurged)
}

func keys(m map[string]bool) string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return strings.Join(out, ", ")
}
