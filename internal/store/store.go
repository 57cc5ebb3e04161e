// Package store holds all SQL on safeflow's tables and runs the safe flow:
// one READ COMMITTED transaction that claims the idempotency key, locks the
// rows it changes FOR UPDATE in ascending id order, writes the change, its
// ledger lines and its outbox event, stores the rendered response and commits.
package store

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/periodic"
)

// Options tune a Store. Zero values take the defaults in parentheses.
type Options struct {
	IdempotencyTTL time.Duration    // how long a key is replayed (24h)
	MaxAttempts    int              // tries of a transaction on 40001, 40P01, 55P03 (5)
	BackoffBase    time.Duration    // first retry delay cap (10ms)
	BackoffMax     time.Duration    // largest retry delay cap (250ms)
	Now            func() time.Time // the clock (time.Now)
	JanitorBatch   int              // expired idempotency records deleted per statement (500)
	// FailureRetention is how long the records of failed attempts are kept
	// (7 days; negative: forever).
	FailureRetention time.Duration
	// PerTransactionTimeouts sets lock_timeout, statement_timeout and
	// idle_in_transaction_session_timeout in every transaction (SET LOCAL,
	// in the BEGIN's round trip) instead of on the session: behind a
	// transaction pooler, whose sessions are shared (see PoolConfig).
	PerTransactionTimeouts bool
	// Read, when set, serves reads that may be a little stale (single
	// resources and lists): a pool on a streaming replica. Everything of a
	// safe flow, the idempotency lookup, authentication and the event feed
	// stay on the primary.
	Read *pgxpool.Pool
	// Coalesce runs the concurrent deposits and withdrawals of one account,
	// and the concurrent transitions that move one payee's books, in one
	// transaction (coalesce.go).
	Coalesce bool
	// DeliveryTimeout is the relays' limit on one webhook attempt (10s):
	// deleting an endpoint waits at most this long for attempts under way.
	DeliveryTimeout time.Duration
	Metrics         *Metrics // nil: none
}

// Store runs safeflow's queries and flows on a pgx pool.
type Store struct {
	pool *pgxpool.Pool
	opt  Options

	systemIDs   sync.Map                    // tenant/currency → id of the system account (immutable once committed)
	moves       *coalescer[domain.Movement] // nil unless Options.Coalesce
	transitions *coalescer[domain.Payment]  // nil unless Options.Coalesce
	payees      payees
	authCache   sync.Map // SHA-256 of an API key → authEntry
}

// New returns a Store on pool.
func New(pool *pgxpool.Pool, opt Options) *Store {
	if opt.IdempotencyTTL <= 0 {
		opt.IdempotencyTTL = 24 * time.Hour
	}
	if opt.MaxAttempts <= 0 {
		opt.MaxAttempts = 5
	}
	if opt.BackoffBase <= 0 {
		opt.BackoffBase = 10 * time.Millisecond
	}
	if opt.BackoffMax <= 0 {
		opt.BackoffMax = 250 * time.Millisecond
	}
	if opt.Read == nil {
		opt.Read = pool
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.JanitorBatch <= 0 {
		opt.JanitorBatch = 500
	}
	if opt.FailureRetention == 0 {
		opt.FailureRetention = 7 * 24 * time.Hour
	}
	if opt.DeliveryTimeout <= 0 {
		opt.DeliveryTimeout = 10 * time.Second
	}
	st := &Store{pool: pool, opt: opt}
	if opt.Coalesce {
		st.moves, st.transitions = newCoalescer[domain.Movement](), newCoalescer[domain.Payment]()
	}
	return st
}

// now returns the current time as PostgreSQL stores it: UTC, microseconds.
func (s *Store) now() time.Time { return s.opt.Now().UTC().Truncate(time.Microsecond) }

// Jobs are the store's background jobs, for a periodic.Runner: the
// idempotency janitor and the retention of failed attempts' records, every
// minute.
func (s *Store) Jobs() []periodic.Job {
	jobs := []periodic.Job{{Name: "idempotency_janitor", Every: time.Minute, Run: s.PurgeExpiredKeys}}
	if s.opt.FailureRetention > 0 {
		jobs = append(jobs, s.failuresJob(s.opt.FailureRetention))
	}
	return jobs
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }
