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
	leaseEnd       time.Time // until then the outcome is worth recording
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
// endpoint that answered 410 is disabled in the same statement. The row of
// an endpoint deleted while the attempt was under way is removed (its
// DELETE waits for that).
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
      AND EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.id = d.endpoint_id)
    RETURNING d.id, d.endpoint_id, o.gone
), deleted AS (
    DELETE FROM webhook_deliveries d USING o
    WHERE d.id = o.id AND d.lease = o.lease AND d.status = 'pending'
      AND NOT EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.id = d.endpoint_id)
), disabled AS (
    UPDATE webhook_endpoints w SET status = 'disabled'
    WHERE w.id IN (SELECT endpoint_id FROM done WHERE gone) AND w.status = 'enabled'
)
SELECT id FROM done`

// record writes a batch of outcomes. While the database cannot be reached
// it keeps trying, with backoff, every outcome whose lease is still this
// relay's: a finished attempt that is not recorded is sent again once its
// lease passes. Meanwhile the relay's slots stay taken, so it claims no new
// work. Only outcomes whose lease has passed are given up (another relay
// may hold the row now; the fence would refuse them anyway).
func (r *Relay) record(ctx context.Context, batch []outcome) {
	var kept []string
	for try := 1; ; try++ {
		var err error
		if kept, err = r.recordOnce(ctx, batch); err == nil {
			break
		}
		r.cfg.Metrics.errored("record")
		now := time.Now()
		live := batch[:0:0]
		for _, o := range batch {
			if now.Before(o.leaseEnd) {
				live = append(live, o)
			}
		}
		if lost := len(batch) - len(live); lost > 0 && ctx.Err() == nil {
			r.log.Warn().Err(err).Int("outcomes", lost).Msg("delivery outcomes not recorded before their lease passed; they will be sent again")
		}
		batch = live
		if len(batch) == 0 || ctx.Err() != nil {
			return
		}
		if try == 1 {
			r.log.Warn().Err(err).Int("outcomes", len(batch)).Msg("record delivery outcomes: retrying until recorded or their lease passes")
		}
		if backoff.Sleep(ctx, backoff.FullJitter(50*time.Millisecond, time.Second, try)) != nil {
			return
		}
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

// recordOnce writes batch in one statement and returns the ids it recorded.
func (r *Relay) recordOnce(ctx context.Context, batch []outcome) ([]string, error) {
	n := len(batch)
	ids, leases, statuses := make([]string, n), make([]int64, n), make([]string, n)
	next, errs, codes, at, gone := make([]*time.Time, n), make([]*string, n), make([]*int, n), make([]time.Time, n), make([]bool, n)
	for i, o := range batch {
		ids[i], leases[i], statuses[i], next[i], errs[i], codes[i], at[i], gone[i] = o.id, o.lease, o.status, o.next, o.lastError, o.code, o.at, o.gone
	}
	rows, _ := r.pool.Query(ctx, recordOutcomes, ids, leases, statuses, next, errs, codes, at, gone)
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
