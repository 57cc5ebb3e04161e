package relay

import (
	"context"
	"time"
)

// Retention says how long finished rows are kept. Zero keeps them forever.
type Retention struct {
	Delivered time.Duration // delivered deliveries
	Dead      time.Duration // dead deliveries (kept longer, for replay)
	Events    time.Duration // events no delivery refers to any more
	Every     time.Duration // how often to purge (1m)
	Batch     int           // rows per DELETE (1000)
}

// Retention deletes, in small batches that skip rows others hold.
const (
	// The status is a literal, not a parameter, so that the planner can
	// prove the partial index webhook_deliveries_finished applies.
	purgeDelivered = `
DELETE FROM webhook_deliveries WHERE id IN (
    SELECT id FROM webhook_deliveries WHERE status = 'delivered' AND finished_at < now() - make_interval(secs => $1)
    ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)`
	purgeDead = `
DELETE FROM webhook_deliveries WHERE id IN (
    SELECT id FROM webhook_deliveries WHERE status = 'dead' AND finished_at < now() - make_interval(secs => $1)
    ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)`
	purgeEvents = `
DELETE FROM events WHERE id IN (
    SELECT e.id FROM events e
    WHERE e.created_at < now() - make_interval(secs => $1)
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id)
    ORDER BY e.position LIMIT $2 FOR UPDATE SKIP LOCKED)`
)

// purgeEvery applies the retention periods every Retention.Every until ctx
// ends, apart from the claim loop so that deleting never delays delivering.
func (r *Relay) purgeEvery(ctx context.Context) {
	t := time.NewTicker(r.cfg.Retention.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.Purge(ctx)
		}
	}
}

// Purge applies the retention periods now, a few batches of each kind (Run
// does it every Retention.Every).
func (r *Relay) Purge(ctx context.Context) {
	ret := r.cfg.Retention
	steps := []struct {
		kind  string
		keep  time.Duration
		query string
	}{
		{"delivered", ret.Delivered, purgeDelivered},
		{"dead", ret.Dead, purgeDead},
		{"events", ret.Events, purgeEvents},
	}
	for _, s := range steps {
		if s.keep <= 0 {
			continue
		}
		for i := 0; i < 10; i++ {
			ct, err := r.pool.Exec(ctx, s.query, s.keep.Seconds(), ret.Batch)
			if err != nil {
				if ctx.Err() == nil {
					r.log.Warn().Err(err).Str("kind", s.kind).Msg("retention purge")
				}
				return
			}
			r.cfg.Metrics.purged(s.kind, ct.RowsAffected())
			if ct.RowsAffected() < int64(ret.Batch) {
				break
			}
		}
	}
}
