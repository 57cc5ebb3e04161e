package relay

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/safeflow/safeflow/internal/periodic"
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
    ORDER BY e.created_at LIMIT $2 FOR UPDATE SKIP LOCKED)`
)

// Jobs are the retention's background jobs, for a periodic.Runner: one per
// kind of row with a retention period, every r.Every, each deleting up to
// ten batches a run so that a large backlog is worked off over several runs
// rather than in one long one. Deleting happens apart from the relay's
// claim loop, so it never delays delivering. m may be nil.
func (r Retention) Jobs(pool *pgxpool.Pool, m *Metrics) []periodic.Job {
	if r.Every <= 0 {
		r.Every = time.Minute
	}
	if r.Batch <= 0 {
		r.Batch = 1000
	}
	var jobs []periodic.Job
	for _, k := range []struct {
		kind  string
		keep  time.Duration
		query string
	}{
		{"delivered", r.Delivered, purgeDelivered},
		{"dead", r.Dead, purgeDead},
		{"events", r.Events, purgeEvents},
	} {
		if k.keep <= 0 {
			continue // kept forever
		}
		jobs = append(jobs, periodic.Job{Name: "retention_" + k.kind, Every: r.Every, Run: func(ctx context.Context) (int64, error) {
			var total int64
			for range 10 {
				ct, err := pool.Exec(ctx, k.query, k.keep.Seconds(), r.Batch)
				if err != nil {
					m.errored("retention")
					return total, err
				}
				total += ct.RowsAffected()
				m.purged(k.kind, ct.RowsAffected())
				if ct.RowsAffected() < int64(r.Batch) {
					break
				}
			}
			return total, nil
		}})
	}
	return jobs
}
