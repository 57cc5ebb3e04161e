package relay

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/safeflow/safeflow/internal/backoff"
	"github.com/safeflow/safeflow/internal/domain"
)

// outcome is the result of one attempt, to record.
type outcome struct {
	id, endpointID string
	lease          int64
	status         string     // domain.DeliveryPending (retry), DeliveryDelivered or DeliveryDead
	next           *time.Time // pending: when to try again
	lastError      *string
	code           *int
	at             time.Time // when the attempt ended
	gone           bool      // the receiver answered 410: disable the endpoint
	eventCreatedAt time.Time
}

// recordLoop writes outcomes as they come, many per statement when they
// come together (a group commit), so recording keeps up with delivering.
func (r *Relay) recordLoop(ctx context.Context, in <-chan outcome) {
	for o := range in {
		batch := []outcome{o}
	drain:
		for len(batch) < 256 {
			select {
			case o, ok := <-in:
				if !ok {
					break drain
				}
				batch = append(batch, o)
			default:
				break drain
			}
		}
		r.record(ctx, batch)
	}
}

// recordOutcomes applies outcomes fenced on their lease: a row another relay
// has claimed since (a new lease) or that was deleted is left alone. An
// endpoint that answered 410 is disabled in the same statement.
const recordOutcomes = `
WITH o AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[], $5::text[], $6::int[], $7::timestamptz[], $8::bool[])
        AS o(id, lease, status, next_attempt_at, last_error, code, at, gone)
), done AS (
    UPDATE webhook_deliveries d
    SET status = o.status, next_attempt_at = o.next_attempt_at, lease = NULL,
        last_error = o.last_error, last_status_code = o.code,
        delivered_at = CASE WHEN o.status = 'delivered' THEN o.at END,
        finished_at = CASE WHEN o.status <> 'pending' THEN o.at END
    FROM o
    WHERE d.id = o.id AND d.lease = o.lease AND d.status = 'pending'
    RETURNING d.id, d.endpoint_id, o.gone
), disabled AS (
    UPDATE webhook_endpoints w SET status = 'disabled'
    WHERE w.id IN (SELECT endpoint_id FROM done WHERE gone) AND w.status = 'enabled'
)
SELECT id FROM done`

// record writes a batch of outcomes, trying a few times; what it cannot
// write is left to the leases, which expire and bring the deliveries back.
func (r *Relay) record(ctx context.Context, batch []outcome) {
	n := len(batch)
	ids, leases, statuses := make([]string, n), make([]int64, n), make([]string, n)
	next, errs, codes, at, gone := make([]*time.Time, n), make([]*string, n), make([]*int, n), make([]time.Time, n), make([]bool, n)
	for i, o := range batch {
		ids[i], leases[i], statuses[i], next[i], errs[i], codes[i], at[i], gone[i] = o.id, o.lease, o.status, o.next, o.lastError, o.code, o.at, o.gone
	}
	var kept []string
	var err error
	for try := 0; try < 3; try++ {
		rows, _ := r.pool.Query(ctx, recordOutcomes, ids, leases, statuses, next, errs, codes, at, gone)
		if kept, err = pgx.CollectRows(rows, pgx.RowTo[string]); err == nil || backoff.Sleep(ctx, 100*time.Millisecond) != nil {
			break
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn().Err(err).Int("outcomes", n).Msg("record delivery outcomes")
		}
		return
	}
	ok := make(map[string]bool, len(kept))
	for _, id := range kept {
		ok[id] = true
	}
	for _, o := range batch {
		switch {
		case !ok[o.id]:
			r.log.Info().Str("delivery_id", o.id).Msg("delivery outcome not recorded: its lease was lost or it was deleted")
			r.cfg.Metrics.recorded("lease_lost")
		case o.status == domain.DeliveryPending:
			r.cfg.Metrics.recorded("retry")
		case o.status == domain.DeliveryDelivered:
			r.cfg.Metrics.delivered(o.at.Sub(o.eventCreatedAt))
		default:
			if o.gone {
				r.log.Warn().Str("endpoint_id", o.endpointID).Msg("webhook endpoint answered 410 Gone: disabled")
			}
			r.cfg.Metrics.recorded("dead")
		}
	}
}
