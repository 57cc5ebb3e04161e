package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/store"
	"github.com/safeflow/safeflow/internal/testdb"
)

// Records of failed attempts are kept FailureRetention, then purged by the
// store's retention job; a newer one stays.
func TestFailedAttemptsArePurgedAfterRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	s := store.New(pool, store.Options{FailureRetention: time.Hour})
	for _, key := range []string{"old", "new"} {
		if err := s.RecordFailure(ctx, domain.FailedAttempt{TenantID: "ten_x", IdempotencyKey: key, RequestID: "r", Method: "POST",
			Route: "/v1/accounts", Cause: "SQLSTATE 40001: x", Attempts: 5, Status: 503, Code: "service_unavailable", DurationMS: 12}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, `UPDATE request_failures SET created_at = now() - interval '2 hours' WHERE idempotency_key = 'old'`); err != nil {
		t.Fatal(err)
	}
	var ran bool
	for _, j := range s.Jobs() {
		if j.Name == "failures_retention" {
			ran = true
			if n, err := j.Run(ctx); err != nil || n != 1 {
				t.Errorf("failures_retention deleted %d (%v), want 1", n, err)
			}
		}
	}
	if !ran {
		t.Fatal("no failures_retention job")
	}
	var left []string
	rows, _ := pool.Query(ctx, `SELECT idempotency_key FROM request_failures`)
	for rows.Next() {
		var k string
		_ = rows.Scan(&k)
		left = append(left, k)
	}
	if len(left) != 1 || left[0] != "new" {
		t.Errorf("left %v, want [new]", left)
	}
}
