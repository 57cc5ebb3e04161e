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
	EndpointStatus string    `db:"endpoint_status"`
}

// claimDeliveries takes up to $1 due deliveries in one statement (so one
// short transaction): rows other relays hold are skipped, not waited for.
// The lease is the due time moved forward, plus a token that fences the
// outcome. A relay that dies holding a lease leaves a row that becomes due
// again when the lease ends. The attempt is counted here, so a delivery that
// crashes its relay cannot be retried forever.
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
), c AS (
    UPDATE webhook_deliveries d
    SET next_attempt_at = now() + make_interval(secs => $2), lease = $3, attempts = d.attempts + 1
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.lease, d.attempts, d.event_id, d.endpoint_id
)
SELECT c.id, c.lease, c.attempts, c.event_id, e.created_at AS event_created_at, e.payload,
       c.endpoint_id, w.url, w.secret, w.status AS endpoint_status
FROM c
JOIN events e ON e.id = c.event_id
JOIN webhook_endpoints w ON w.id = c.endpoint_id`

// claim takes up to n due deliveries.
func (r *Relay) claim(ctx context.Context, n int) ([]claimed, error) {
	rows, _ := r.pool.Query(ctx, claimDeliveries, n, r.cfg.Lease.Seconds(), rand.Int64())
	ds, err := pgx.CollectRows(rows, pgx.RowToStructByName[claimed])
	if err == nil {
		r.cfg.Metrics.claimedBatch(len(ds))
	}
	return ds, err
}
