package testdb

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// invariants are the checks of product.md §6 that hold after every
// scenario. Each query returns the rows that break its invariant.
var invariants = []struct {
	name, sql string
	needsKeys bool // holds only while no idempotency key was purged
}{
	{"1. every ledger journal sums to zero", `
		SELECT journal_id, sum(amount)::text FROM ledger_entries GROUP BY journal_id HAVING sum(amount) <> 0`, false},
	{"1. the books of each tenant and currency sum to zero", `
		SELECT tenant_id || ' ' || currency, sum(amount)::text FROM ledger_entries GROUP BY tenant_id, currency HAVING sum(amount) <> 0`, false},
	{"1. every journal has at least two lines", `
		SELECT journal_id, count(*)::text FROM ledger_entries GROUP BY journal_id HAVING count(*) < 2`, false},
	{"1. every ledger line is on an account of its tenant and currency", `
		SELECT l.id, l.account_id FROM ledger_entries l
		WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = l.account_id AND a.tenant_id = l.tenant_id AND a.currency = l.currency)`, false},
	{"2. cached balances equal the sums of the ledger lines", `
		SELECT a.id, format('cached %s/%s/%s, ledger %s/%s/%s', a.available, a.held, a.incoming, l.av, l.he, l.inc)
		FROM accounts a
		LEFT JOIN (SELECT account_id,
		                  coalesce(sum(amount) FILTER (WHERE book = 'available'), 0) AS av,
		                  coalesce(sum(amount) FILTER (WHERE book = 'held'), 0) AS he,
		                  coalesce(sum(amount) FILTER (WHERE book = 'incoming'), 0) AS inc
		           FROM ledger_entries GROUP BY account_id) l ON l.account_id = a.id
		WHERE a.kind = 'customer'
		  AND (a.available, a.held, a.incoming) IS DISTINCT FROM (coalesce(l.av, 0), coalesce(l.he, 0), coalesce(l.inc, 0))`, false},
	{"2. system accounts carry no cache (their balance is their ledger)", `
		SELECT id, 'cached books on a system account' FROM accounts
		WHERE kind = 'system' AND (available IS NOT NULL OR held IS NOT NULL OR incoming IS NOT NULL)`, false},
	{"3. no non-system book is negative, cached or in the ledger", `
		SELECT id, 'negative cached book' FROM accounts
		WHERE kind = 'customer' AND (available < 0 OR held < 0 OR incoming < 0)
		UNION ALL
		SELECT l.account_id || ' ' || l.book, sum(l.amount)::text FROM ledger_entries l
		JOIN accounts a ON a.id = l.account_id AND a.kind = 'customer'
		GROUP BY l.account_id, l.book HAVING sum(l.amount) < 0`, false},
	{"4. every account creation has exactly one account.created event", `
		SELECT a.id, count(e.id)::text FROM accounts a
		LEFT JOIN events e ON e.aggregate_id = a.id AND e.type = 'account.created'
		WHERE a.kind = 'customer' GROUP BY a.id HAVING count(e.id) <> 1`, false},
	{"4. every movement has exactly one event, written by its own transaction", `
		SELECT m.id, count(e.id)::text FROM movements m
		LEFT JOIN events e ON e.aggregate_id = m.id AND e.type = m.kind || '.created'
		     AND e.tenant_id = m.tenant_id AND e.xmin = m.xmin -- both rows are immutable: same (sub)transaction
		GROUP BY m.id HAVING count(e.id) <> 1`, false},
	{"4. every movement's journal is its own and moves its amount", `
		SELECT m.id, count(l.id)::text FROM movements m
		LEFT JOIN ledger_entries l ON l.journal_id = m.journal_id AND l.account_id = m.account_id
		     AND l.amount = CASE m.kind WHEN 'deposit' THEN m.amount ELSE -m.amount END
		GROUP BY m.id HAVING count(l.id) <> 1`, false},
	{"4. no event without the change it describes", `
		SELECT e.id, e.type FROM events e
		WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = e.aggregate_id AND a.tenant_id = e.tenant_id)
		  AND NOT EXISTS (SELECT 1 FROM movements m WHERE m.id = e.aggregate_id AND m.tenant_id = e.tenant_id)`, false},
	{"5. every stored creation points at its own resource, and every resource has one stored creation", `
		WITH created AS (
		    SELECT tenant_id, substring(location from '[^/]+$') AS id FROM idempotency_keys WHERE status_code = 201),
		resources AS (
		    SELECT tenant_id, id FROM accounts WHERE kind = 'customer'
		    UNION ALL SELECT tenant_id, id FROM movements)
		SELECT coalesce(c.id, r.id), format('keys %s, resources %s', count(c.id), count(r.id))
		FROM created c FULL JOIN resources r ON r.id = c.id AND r.tenant_id = c.tenant_id
		GROUP BY coalesce(c.id, r.id) HAVING count(c.id) <> 1 OR count(r.id) <> 1`, true},
}

// CheckInvariants fails t for every row that breaks an invariant of
// product.md §6. Scenarios whose idempotency keys were purged by design
// (their resources outlive their keys) pass keysPurged = true, which skips
// only the check that every resource still has its key.
func CheckInvariants(t testing.TB, pool *pgxpool.Pool, keysPurged ...bool) {
	t.Helper()
	ctx := context.Background()
	purged := len(keysPurged) > 0 && keysPurged[0]
	for _, inv := range invariants {
		if inv.needsKeys && purged {
			continue
		}
		rows, _ := pool.Query(ctx, inv.sql)
		bad, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var what, detail *string
			err := r.Scan(&what, &detail)
			return deref(what) + ": " + deref(detail), err
		})
		if err != nil {
			t.Errorf("invariant %q: query: %v", inv.name, err)
			continue
		}
		for _, b := range bad {
			t.Errorf("invariant %q broken: %s", inv.name, b)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "<null>"
	}
	return *s
}
