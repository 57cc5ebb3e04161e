package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/safeflow/safeflow/internal/outbox"
	"github.com/safeflow/safeflow/internal/periodic"
)

// Repairs rebuild derived state only: the cached balances on accounts (from
// the ledger lines) and missing delivery rows (from the events and the
// endpoints). They never change ledger lines, events or stored answers.
// Each change is its own short transaction that locks what it changes as
// the safe flow does (the account FOR UPDATE), so it waits for, and never
// races, a request on the same account.

// Repaired is one change a repair made.
type Repaired struct{ What, Detail string }

func (r Repaired) String() string { return r.What + ": " + r.Detail }

const (
	// staleBalances lists the accounts invariant 2 finds; each is then
	// fixed under its row lock.
	staleBalances  = `SELECT a.id` + staleCaches + ` ORDER BY a.id`
	lockBalances   = `SELECT available, held, incoming FROM accounts WHERE id = $1 AND kind = 'customer' FOR UPDATE`
	ledgerBalances = `
SELECT coalesce(sum(amount) FILTER (WHERE book = 'available'), 0), coalesce(sum(amount) FILTER (WHERE book = 'held'), 0),
       coalesce(sum(amount) FILTER (WHERE book = 'incoming'), 0)
FROM ledger_entries WHERE account_id = $1`
	setBalances = `UPDATE accounts SET available = $2, held = $3, incoming = $4 WHERE id = $1`

	// insertMissingDeliveries creates, in batches, the delivery rows that
	// invariant 6 finds missing, for events after the horizon $1.
	insertMissingDeliveries = `
INSERT INTO webhook_deliveries (id, tenant_id, event_id, endpoint_id, status, next_attempt_at, created_at)
SELECT safeflow_new_id('del_'), e.tenant_id, e.id, w.id, 'pending', now(), now()
FROM events e
JOIN webhook_endpoints w ON w.tenant_id = e.tenant_id AND (w.event_types = '{}' OR e.type = ANY (w.event_types))
WHERE w.created_at < e.created_at - interval '1 second' AND e.created_at > $1
  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.endpoint_id = w.id)
LIMIT $2
ON CONFLICT (event_id, endpoint_id) DO NOTHING
RETURNING event_id, endpoint_id`
)

// RepairBalances sets every stale cached balance to its ledger's sums, one
// account per transaction, and reports each change.
func (s *Store) RepairBalances(ctx context.Context, report func(Repaired)) error {
	rows, _ := s.pool.Query(ctx, staleBalances)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, id := range ids {
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			var cached, ledger [3]int64
			if err := tx.QueryRow(ctx, lockBalances, id).Scan(&cached[0], &cached[1], &cached[2]); err != nil {
				return err
			}
			if err := tx.QueryRow(ctx, ledgerBalances, id).Scan(&ledger[0], &ledger[1], &ledger[2]); err != nil {
				return err
			}
			if cached == ledger {
				return nil // fixed meanwhile
			}
			if _, err := tx.Exec(ctx, setBalances, id, ledger[0], ledger[1], ledger[2]); err != nil {
				return err
			}
			report(Repaired{id, fmt.Sprintf("cached balances available/held/incoming %d/%d/%d set to the ledger's %d/%d/%d",
				cached[0], cached[1], cached[2], ledger[0], ledger[1], ledger[2])})
			return nil
		})
		if err != nil {
			return fmt.Errorf("repair the balances of %s: %w", id, err)
		}
	}
	return nil
}

// RepairDeliveries creates the missing delivery rows of the events after
// h.Outbox, 500 a transaction, wakes the relays, and reports each row.
func (s *Store) RepairDeliveries(ctx context.Context, h Horizons, report func(Repaired)) error {
	since := any(pgInfinity)
	if !h.Outbox.IsZero() {
		since = h.Outbox
	}
	for {
		var n int
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			rows, _ := tx.Query(ctx, insertMissingDeliveries, since, 500)
			made, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Repaired, error) {
				var event, endpoint string
				err := r.Scan(&event, &endpoint)
				return Repaired{event, "created its missing delivery to " + endpoint}, err
			})
			if err != nil {
				return err
			}
			for _, m := range made {
				report(m)
			}
			n = len(made)
			if n > 0 {
				_, err = tx.Exec(ctx, notifyRelays, outbox.Channel)
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("repair deliveries: %w", err)
		}
		if n < 500 {
			return nil
		}
	}
}

// VerifyJob runs every invariant every interval on pool (give it one apart
// from the requests'), with the horizons of now, exports the number of
// rows breaking each as safeflow_invariant_violations{check}, and fails the
// run (logged, counted) when any is broken.
func VerifyJob(pool *pgxpool.Pool, every time.Duration, horizons func(now time.Time) Horizons, m *Metrics) periodic.Job {
	return periodic.Job{Name: "verify", Every: every, Run: func(ctx context.Context) (int64, error) {
		h := horizons(time.Now())
		var broken int64
		var first string
		for _, inv := range Invariants {
			bad, err := CheckInvariant(ctx, pool, inv, h)
			if err != nil {
				return broken, fmt.Errorf("%s: %w", inv.Name, err)
			}
			m.violations(inv.Name, len(bad))
			if len(bad) > 0 && first == "" {
				first = fmt.Sprintf("%s: %s", inv.Name, bad[0])
			}
			broken += int64(len(bad))
		}
		if broken > 0 {
			return broken, fmt.Errorf("%d rows break the invariants (run api verify); the first: %s", broken, first)
		}
		return 0, nil
	}}
}
