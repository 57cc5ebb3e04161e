package store

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Invariant is one check of product.md §6: a query that returns the rows
// that break it, as (what, detail). The tests run every one after every
// scenario; api verify and the periodic verification of api serve run
// them on a live database. They only read: plain SELECTs, each in its own
// statement, so they block no writer.
//
// Horizons keep them true on a database whose janitors purge by design:
// a check that needs rows of a kind that is purged (Needs) looks only at
// what was created after $1, that kind's horizon.
type Invariant struct {
	Name  string
	SQL   string
	Needs Purged // "" or what must not have been purged, beyond the horizons, for it to hold
}

// Purged names rows a scenario purged by design, beyond the horizons
// (tests that move the clock), so that the invariants that need them are
// skipped.
type Purged string

// What can be purged.
const (
	KeysPurged   Purged = "keys"   // expired idempotency keys: resources outlive them
	OutboxPurged Purged = "outbox" // events and deliveries past retention
)

// staleCaches are the customer accounts whose cached books differ from the
// sums of their ledger lines: invariant 2 reports them (a, with the sums l),
// RepairBalances fixes them.
const staleCaches = `
FROM accounts a
LEFT JOIN (SELECT account_id,
                  coalesce(sum(amount) FILTER (WHERE book = 'available'), 0) AS av,
                  coalesce(sum(amount) FILTER (WHERE book = 'held'), 0) AS he,
                  coalesce(sum(amount) FILTER (WHERE book = 'incoming'), 0) AS inc
           FROM ledger_entries GROUP BY account_id) l ON l.account_id = a.id
WHERE a.kind = 'customer'
  AND (a.available, a.held, a.incoming) IS DISTINCT FROM (coalesce(l.av, 0), coalesce(l.he, 0), coalesce(l.inc, 0))`

// Invariants are the checks, numbered as product.md §6 numbers them.
var Invariants = []Invariant{
	{"1. every ledger journal sums to zero", `
		SELECT journal_id, sum(amount)::text FROM ledger_entries GROUP BY journal_id HAVING sum(amount) <> 0`, ""},
	{"1. the books of each tenant and currency sum to zero", `
		SELECT tenant_id || ' ' || currency, sum(amount)::text FROM ledger_entries GROUP BY tenant_id, currency HAVING sum(amount) <> 0`, ""},
	{"1. every journal has at least two lines", `
		SELECT journal_id, count(*)::text FROM ledger_entries GROUP BY journal_id HAVING count(*) < 2`, ""},
	{"1. every ledger line is on an account of its tenant and currency", `
		SELECT l.id, l.account_id FROM ledger_entries l
		WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = l.account_id AND a.tenant_id = l.tenant_id AND a.currency = l.currency)`, ""},
	{"1. every row written by a request names an existing tenant, and accounts of that tenant", `
		SELECT 'idempotency key ' || k.key, k.tenant_id FROM idempotency_keys k WHERE NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
		UNION ALL
		SELECT 'event ' || e.id, e.tenant_id FROM events e WHERE NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = e.tenant_id)
		UNION ALL
		SELECT 'transition ' || pt.payment_id || ' v' || pt.version, pt.tenant_id FROM payment_transitions pt
		WHERE NOT EXISTS (SELECT 1 FROM payments p WHERE p.id = pt.payment_id AND p.tenant_id = pt.tenant_id)
		UNION ALL
		SELECT 'movement ' || m.id, m.tenant_id FROM movements m
		WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = m.account_id AND a.tenant_id = m.tenant_id)
		UNION ALL
		SELECT 'payment ' || p.id, p.tenant_id FROM payments p
		WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = p.payer_account_id AND a.tenant_id = p.tenant_id)
		   OR NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = p.payee_account_id AND a.tenant_id = p.tenant_id)`, ""},
	{"2. cached balances equal the sums of the ledger lines", `
		SELECT a.id, format('cached %s/%s/%s, ledger %s/%s/%s', a.available, a.held, a.incoming, l.av, l.he, l.inc)` + staleCaches, ""},
	{"2. system accounts carry no cache (their balance is their ledger)", `
		SELECT id, 'cached books on a system account' FROM accounts
		WHERE kind = 'system' AND (available IS NOT NULL OR held IS NOT NULL OR incoming IS NOT NULL)`, ""},
	{"3. no non-system book is negative, cached or in the ledger", `
		SELECT id, 'negative cached book' FROM accounts
		WHERE kind = 'customer' AND (available < 0 OR held < 0 OR incoming < 0)
		UNION ALL
		SELECT l.account_id || ' ' || l.book, sum(l.amount)::text FROM ledger_entries l
		JOIN accounts a ON a.id = l.account_id AND a.kind = 'customer'
		GROUP BY l.account_id, l.book HAVING sum(l.amount) < 0`, ""},
	{"4. every account creation has exactly one account.created event", `
		SELECT a.id, count(e.id)::text FROM accounts a
		LEFT JOIN events e ON e.aggregate_id = a.id AND e.type = 'account.created'
		WHERE a.kind = 'customer' AND a.created_at > $1 GROUP BY a.id HAVING count(e.id) <> 1`, OutboxPurged},
	{"4. every movement has exactly one event, written by its own transaction", `
		SELECT m.id, count(e.id)::text FROM movements m
		LEFT JOIN events e ON e.aggregate_id = m.id AND e.type = m.kind || '.created'
		     AND e.tenant_id = m.tenant_id AND e.xmin = m.xmin -- both rows are immutable: same (sub)transaction
		WHERE m.created_at > $1
		GROUP BY m.id HAVING count(e.id) <> 1`, OutboxPurged},
	{"4. every movement's journal is its own and moves its amount", `
		SELECT m.id, count(l.id)::text FROM movements m
		LEFT JOIN ledger_entries l ON l.journal_id = m.journal_id AND l.account_id = m.account_id
		     AND l.amount = CASE m.kind WHEN 'deposit' THEN m.amount ELSE -m.amount END
		GROUP BY m.id HAVING count(l.id) <> 1`, ""},
	{"4. every payment's history runs 1..version through allowed transitions to its status", `
		SELECT p.id, format('status %s version %s; history %s', p.status, p.version,
		       string_agg(t.version || ':' || coalesce(t.from_status, '-') || '>' || t.action || '>' || t.to_status, ' ' ORDER BY t.version))
		FROM payments p JOIN payment_transitions t ON t.payment_id = p.id
		LEFT JOIN payment_transitions prev ON prev.payment_id = t.payment_id AND prev.version = t.version - 1
		GROUP BY p.id, p.status, p.version
		HAVING count(*) <> p.version OR max(t.version) <> p.version
		    OR bool_or(t.version = p.version AND t.to_status <> p.status)
		    OR bool_or((t.version = 1) <> (t.from_status IS NULL) OR t.version > 1 AND prev.to_status IS DISTINCT FROM t.from_status)
		    OR bool_or((coalesce(t.from_status, '-'), t.action, t.to_status) NOT IN (` + transitionTable + `))
		UNION ALL
		SELECT p.id, 'no history' FROM payments p WHERE NOT EXISTS (SELECT 1 FROM payment_transitions t WHERE t.payment_id = p.id)`, ""},
	{"4. every payment transition has exactly one event, written by its own transaction", `
		SELECT t.payment_id || ' v' || t.version, count(e.id)::text FROM payment_transitions t
		LEFT JOIN events e ON e.aggregate_type = 'payment' AND e.aggregate_id = t.payment_id AND e.sequence = t.version
		     AND e.type = 'payment.' || CASE t.action WHEN 'create' THEN 'created' ELSE t.to_status END
		     AND e.tenant_id = t.tenant_id AND e.xmin = t.xmin -- both rows are immutable: same (sub)transaction
		WHERE t.created_at > $1
		GROUP BY t.payment_id, t.version HAVING count(e.id) <> 1
		UNION ALL
		SELECT e.id, e.type || ' without its transition' FROM events e
		WHERE e.aggregate_type = 'payment'
		  AND NOT EXISTS (SELECT 1 FROM payment_transitions t WHERE t.payment_id = e.aggregate_id AND t.version = e.sequence)`, OutboxPurged},
	{"4. every payment transition's journal moves the payment's amount on the books of the state machine", `
		WITH legs(action, from_status, party, book, sign) AS (VALUES ` + legTable + `),
		want AS (
		    SELECT t.journal_id, CASE l.party WHEN 'payer' THEN p.payer_account_id ELSE p.payee_account_id END AS account_id,
		           l.book, l.sign * p.amount AS amount
		    FROM payment_transitions t JOIN payments p ON p.id = t.payment_id
		    JOIN legs l ON l.action = t.action AND l.from_status = coalesce(t.from_status, '-')),
		got AS (
		    SELECT l.journal_id, l.account_id, l.book, l.amount FROM ledger_entries l
		    WHERE l.journal_id IN (SELECT journal_id FROM payment_transitions))
		SELECT coalesce(w.journal_id, g.journal_id), format('want %s %s %s, got %s %s %s', w.account_id, w.book, w.amount, g.account_id, g.book, g.amount)
		FROM want w FULL JOIN got g USING (journal_id, account_id, book, amount)
		WHERE w.journal_id IS NULL OR g.journal_id IS NULL`, ""},
	{"2. held is the sum of pending payments out, incoming the sum of confirmed payments in", `
		SELECT a.id, format('held %s incoming %s, payments %s %s', a.held, a.incoming, coalesce(o.pending, 0), coalesce(i.confirmed, 0))
		FROM accounts a
		LEFT JOIN (SELECT payer_account_id AS id, sum(amount) AS pending FROM payments WHERE status = 'pending' GROUP BY 1) o USING (id)
		LEFT JOIN (SELECT payee_account_id AS id, sum(amount) AS confirmed FROM payments WHERE status = 'confirmed' GROUP BY 1) i USING (id)
		WHERE a.kind = 'customer' AND (a.held <> coalesce(o.pending, 0) OR a.incoming <> coalesce(i.confirmed, 0))`, ""},
	{"4. no event without the change it describes", `
		SELECT e.id, e.type FROM events e
		WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = e.aggregate_id AND a.tenant_id = e.tenant_id)
		  AND NOT EXISTS (SELECT 1 FROM movements m WHERE m.id = e.aggregate_id AND m.tenant_id = e.tenant_id)
		  AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.id = e.aggregate_id AND p.tenant_id = e.tenant_id)`, ""},
	{"4. the feed serves each aggregate's events in sequence order", `
		SELECT aggregate_id, format('sequence %s is served as its number %s', sequence, f) FROM (
		    SELECT aggregate_id, sequence,
		           row_number() OVER (PARTITION BY tenant_id, aggregate_type, aggregate_id ORDER BY sequence) AS s,
		           row_number() OVER (PARTITION BY tenant_id, aggregate_type, aggregate_id ORDER BY feed_xid, position) AS f
		    FROM events) x
		WHERE s <> f`, ""},
	// A key is an xid that has finished once its event commits, so a caught-up
	// reader sees the event at once: never a key no transaction has yet.
	{"4. every event's feed key is its writer's xid or its aggregate's previous event's key", `
		SELECT e.id, format('feed_xid %s, xid %s', e.feed_xid, e.xid) FROM events e
		WHERE e.feed_xid <> e.xid AND e.feed_xid IS DISTINCT FROM (
		    SELECT p.feed_xid FROM events p
		    WHERE p.tenant_id = e.tenant_id AND p.aggregate_type = e.aggregate_type AND p.aggregate_id = e.aggregate_id
		      AND p.sequence < e.sequence ORDER BY p.sequence DESC LIMIT 1)
		  AND e.created_at > $1`, OutboxPurged},
	{"5. every stored creation points at its own resource, and every resource has one stored creation", `
		WITH created AS (
		    SELECT tenant_id, substring(location from '[^/]+$') AS id FROM idempotency_keys WHERE status_code = 201
		    UNION ALL -- the payments a stored batch created
		    SELECT k.tenant_id, item->'body'->>'id' FROM idempotency_keys k,
		           jsonb_array_elements(convert_from(k.body, 'UTF8')::jsonb->'data') AS item
		    WHERE k.status_code = 200 AND k.content_type = 'application/json' AND k.location IS NULL
		      AND convert_from(k.body, 'UTF8')::jsonb ? 'data' AND (item->>'status')::int = 201),
		resources AS (
		    SELECT tenant_id, id FROM accounts WHERE kind = 'customer' AND created_at > $1
		    UNION ALL SELECT tenant_id, id FROM movements WHERE created_at > $1
		    UNION ALL SELECT tenant_id, id FROM payments WHERE created_at > $1
		    UNION ALL SELECT tenant_id, id FROM webhook_endpoints WHERE created_at > $1
		    -- a deleted endpoint was created once, then deleted on purpose
		    UNION ALL SELECT tenant_id, id FROM created WHERE id LIKE 'we\_%' AND id NOT IN (SELECT id FROM webhook_endpoints))
		SELECT coalesce(c.id, r.id), format('keys %s, resources %s', count(c.id), count(r.id))
		FROM created c FULL JOIN resources r ON r.id = c.id AND r.tenant_id = c.tenant_id
		WHERE r.id IS NOT NULL OR c.id NOT IN (SELECT id FROM accounts UNION ALL SELECT id FROM movements
		    UNION ALL SELECT id FROM payments UNION ALL SELECT id FROM webhook_endpoints) -- a resource older than the horizon is not counted
		GROUP BY coalesce(c.id, r.id) HAVING count(c.id) <> 1 OR count(r.id) <> 1`, KeysPurged},
	{"6. every delivery is of an event of its tenant to an endpoint of its tenant that subscribes to the event's type", `
		SELECT d.id, coalesce(e.type, 'no event') || ' → ' || coalesce(w.id, 'no endpoint') FROM webhook_deliveries d
		LEFT JOIN events e ON e.id = d.event_id AND e.tenant_id = d.tenant_id
		LEFT JOIN webhook_endpoints w ON w.id = d.endpoint_id AND w.tenant_id = d.tenant_id
		WHERE e.id IS NULL OR w.id IS NULL OR NOT (w.event_types = '{}' OR e.type = ANY (w.event_types))
		  -- a PATCH may have changed the subscription since (see below)
		  AND e.created_at > coalesce(w.event_types_changed_at, w.created_at) + interval '1 second'`, ""},
	// An endpoint receives the events whose requests started after its 201
	// (product.md §4). Request start times are not recorded, so this checks
	// the events created over a second after the endpoint, whose requests
	// certainly started after it committed; after a PATCH of its event
	// types, over a second after that.
	{"6. every event has a delivery row (pending, delivered or dead) for each endpoint that subscribed before it", `
		SELECT e.id, w.id FROM events e
		JOIN webhook_endpoints w ON w.tenant_id = e.tenant_id AND (w.event_types = '{}' OR e.type = ANY (w.event_types))
		WHERE coalesce(w.event_types_changed_at, w.created_at) < e.created_at - interval '1 second' AND e.created_at > $1
		  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.endpoint_id = w.id)`, OutboxPurged},
	{"6. every finished delivery says how it ended", `
		SELECT id, status FROM webhook_deliveries
		WHERE (status = 'dead' AND (last_error IS NULL OR attempts < 1)) OR (status = 'delivered' AND (attempts < 1 OR last_status_code NOT BETWEEN 200 AND 299))`, ""},
}

// transitionTable and legTable are product.md §4's payment table, written
// here independently of internal/domain so that the check does not trust
// the code it checks.
const transitionTable = `('-', 'create', 'pending'), ('pending', 'confirm', 'confirmed'), ('confirmed', 'settle', 'settled'),
	('pending', 'cancel', 'cancelled'), ('confirmed', 'refund', 'refunded'), ('settled', 'refund', 'refunded')`

const legTable = `('create', '-', 'payer', 'available', -1), ('create', '-', 'payer', 'held', 1),
	('confirm', 'pending', 'payer', 'held', -1), ('confirm', 'pending', 'payee', 'incoming', 1),
	('settle', 'confirmed', 'payee', 'incoming', -1), ('settle', 'confirmed', 'payee', 'available', 1),
	('cancel', 'pending', 'payer', 'held', -1), ('cancel', 'pending', 'payer', 'available', 1),
	('refund', 'confirmed', 'payee', 'incoming', -1), ('refund', 'confirmed', 'payer', 'available', 1),
	('refund', 'settled', 'payee', 'available', -1), ('refund', 'settled', 'payer', 'available', 1)`

// Horizons bound the checks that need rows janitors purge: only what was
// created after them is checked. The zero value checks everything.
type Horizons struct {
	Outbox time.Time // events and deliveries older than this may be gone
	Keys   time.Time // idempotency keys older than this may be gone
}

// Violation is one row that breaks an invariant.
type Violation struct{ What, Detail string }

func (v Violation) String() string { return v.What + ": " + v.Detail }

// CheckInvariant runs one invariant on pool and returns the rows that break it.
func CheckInvariant(ctx context.Context, pool *pgxpool.Pool, inv Invariant, h Horizons) ([]Violation, error) {
	since := func(t time.Time) any {
		if t.IsZero() {
			return pgInfinity
		}
		return t
	}
	var args []any
	if strings.Contains(inv.SQL, "$1") {
		args = append(args, since(h.Outbox))
		if inv.Needs == KeysPurged {
			args[0] = since(h.Keys)
		}
	}
	rows, _ := pool.Query(ctx, inv.SQL, args...)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Violation, error) {
		var what, detail *string
		err := r.Scan(&what, &detail)
		return Violation{deref(what), deref(detail)}, err
	})
}

// pgInfinity is timestamptz '-infinity': no horizon.
var pgInfinity = pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}
