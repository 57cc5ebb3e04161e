package relay

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// claimed is one delivery a relay holds the lease of.
type claimed struct {
	ID             string    `db:"id"`
	Lease          int64     `db:"lease"`
	Attempts       int       `db:"attempts"`
	EventID        string    `db:"event_id"`
	EventCreatedAt time.Time `db:"event_created_at"`
	Payload        []byte    `db:"payload"`
	EndpointID     string    `db:"endpoint_id"`
	URL            string    `db:"url"`
	Secret         string    `db:"secret"`
	PreviousSecret *string   `db:"previous_secret"` // while it has not expired (rotate-secret)
	EndpointStatus string    `db:"endpoint_status"`

	// deadline ends the attempt: DeliveryTimeout after the claim began, so
	// no attempt outlasts that however long it waited to start (deleting an
	// endpoint relies on it). leaseEnd is when the lease may pass to another
	// relay, by this process's clock.
	deadline, leaseEnd time.Time
}

// claimDeliveries takes up to $1 due deliveries in one statement (so one
// short transaction): rows other relays hold are skipped, not waited for.
// The lease is the due time moved forward, plus a token that fences the
// outcome. A relay that dies holding a lease leaves a row that becomes due
// again when the lease ends. The attempt is counted here, so a delivery that
// crashes its relay cannot be retried forever.
//
// A due row whose endpoint is gone is removed, unsent: an event transaction
// that read the endpoint before it was deleted inserted it afterwards.
//
// Statuses are spelt as the schema's CHECK spells them (a test checks that
// domain's constants agree); the literal lets the planner use the partial
// index webhook_deliveries_due.
const claimDeliveries = `
WITH due AS (
    SELECT id FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), orphans AS (
    DELETE FROM webhook_deliveries d USING due
    WHERE d.id = due.id AND NOT EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.id = d.endpoint_id)
), c AS (
    UPDATE webhook_deliveries d
    SET next_attempt_at = now() + make_interval(secs => $2), lease = $3, attempts = d.attempts + 1
    FROM due WHERE d.id = due.id AND EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.id = d.endpoint_id)
    RETURNING d.id, d.lease, d.attempts, d.event_id, d.endpoint_id
)
SELECT c.id, c.lease, c.attempts, c.event_id, e.created_at AS event_created_at, e.payload,
       c.endpoint_id, w.url, w.secret, w.status AS endpoint_status,
       CASE WHEN w.previous_secret_expires_at > now() THEN w.previous_secret END AS previous_secret
FROM c
JOIN events e ON e.id = c.event_id
JOIN webhook_endpoints w ON w.id = c.endpoint_id`

// claim takes up to n due deliveries.
func (r *Relay) claim(ctx context.Context, n int) ([]claimed, error) {
	began := time.Now()
	rows, _ := r.pool.Query(ctx, claimDeliveries, n, r.cfg.Lease.Seconds(), rand.Int64())
	ds, err := pgx.CollectRows(rows, pgx.RowToStructByName[claimed])
	if err != nil {
		return nil, err
	}
	for i := range ds {
		ds[i].deadline, ds[i].leaseEnd = began.Add(r.cfg.DeliveryTimeout), began.Add(r.cfg.Lease)
	}
	r.cfg.Metrics.claimedBatch(len(ds))
	return ds, nil
}

// HotQuery is a statement of the relay whose plan matters on a large
// table, with example arguments and the index it must use (checked by
// internal/store's plan test on a seeded tenant).
type HotQuery struct {
	Name, SQL string
	Args      []any
	Index     string
}

// HotQueries are the relay's claim and retention statements.
func HotQueries() []HotQuery {
	return []HotQuery{
		{"claim due deliveries", claimDeliveries, []any{32, 30.0, int64(1)}, "webhook_deliveries_due"},
		{"purge delivered deliveries", purgeDelivered, []any{72 * 3600.0, 1000}, "webhook_deliveries_finished"},
		{"purge events", purgeEvents, []any{90 * 24 * 3600.0, 1000}, "events_created_at"},
	}
}
