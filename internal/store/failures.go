package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/periodic"
)

const (
	insertFailure = `
INSERT INTO request_failures (tenant_id, idempotency_key, request_id, method, route, cause, attempts, status, code, duration_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`
	selectFailures = `
SELECT request_id, method, route, cause, attempts, status, code, duration_ms, created_at
FROM request_failures WHERE tenant_id = $1 AND idempotency_key = $2 ORDER BY id DESC LIMIT 20`
	purgeFailures = `
DELETE FROM request_failures WHERE id IN (
    SELECT id FROM request_failures WHERE created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT 1000)`
)

// RecordFailure writes the record of a failed request in a statement of
// its own, after (and whatever became of) the request's transaction.
func (s *Store) RecordFailure(ctx context.Context, f domain.FailedAttempt) error {
	_, err := s.pool.Exec(ctx, insertFailure, f.TenantID, nullable(f.IdempotencyKey), f.RequestID, f.Method, f.Route,
		f.Cause, f.Attempts, f.Status, f.Code, f.DurationMS)
	return err
}

// failedAttempts returns the latest recorded failures of a tenant's key,
// newest first.
func failedAttempts(ctx context.Context, q querier, tenantID, key string) ([]domain.FailedAttempt, error) {
	rows, _ := q.Query(ctx, selectFailures, tenantID, key)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (domain.FailedAttempt, error) {
		var f domain.FailedAttempt
		err := r.Scan(&f.RequestID, &f.Method, &f.Route, &f.Cause, &f.Attempts, &f.Status, &f.Code, &f.DurationMS, &f.At)
		f.At = f.At.UTC()
		return f, err
	})
}

// FailuresJob purges the records of failed attempts older than keep, every
// minute; 0 keeps them.
func (s *Store) failuresJob(keep time.Duration) periodic.Job {
	return periodic.Job{Name: "failures_retention", Every: time.Minute, Run: func(ctx context.Context) (int64, error) {
		var total int64
		for range 10 {
			ct, err := s.pool.Exec(ctx, purgeFailures, keep.Seconds())
			if err != nil {
				return total, err
			}
			total += ct.RowsAffected()
			if ct.RowsAffected() < 1000 {
				break
			}
		}
		return total, nil
	}}
}
