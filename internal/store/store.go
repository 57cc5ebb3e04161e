// Package store holds all SQL on safeflow's tables and runs the safe flow:
// one READ COMMITTED transaction that claims the idempotency key, locks the
// rows it changes FOR UPDATE in ascending id order, writes the change, its
// ledger lines and its outbox event, stores the rendered response and commits.
package store

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/safeflow/safeflow/internal/backoff"
	"github.com/safeflow/safeflow/internal/domain"
)

// Options tune a Store. Zero values take the defaults in parentheses.
type Options struct {
	IdempotencyTTL time.Duration    // how long a key is replayed (24h)
	MaxAttempts    int              // tries of a transaction on 40001, 40P01, 55P03 (5)
	BackoffBase    time.Duration    // first retry delay cap (10ms)
	BackoffMax     time.Duration    // largest retry delay cap (250ms)
	Now            func() time.Time // the clock (time.Now)
	// OnRetry is called once per retried transaction with the reason
	// ("serialization_failure", "deadlock", "lock_timeout").
	OnRetry func(reason string)
}

// Store runs safeflow's queries and flows on a pgx pool.
type Store struct {
	pool *pgxpool.Pool
	opt  Options

	systemIDs sync.Map // tenant/currency → id of the system account (immutable once committed)
	authCache sync.Map // SHA-256 of an API key → authEntry
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
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.OnRetry == nil {
		opt.OnRetry = func(string) {}
	}
	return &Store{pool: pool, opt: opt}
}

// now returns the current time as PostgreSQL stores it: UTC, microseconds.
func (s *Store) now() time.Time { return s.opt.Now().UTC().Truncate(time.Microsecond) }

// step is the business part of a safe flow. It reads and locks what it
// needs in tx and decides. It returns the resource to render and the writes
// that apply it, queued on a batch, or a *domain.Error. A step writes
// nothing itself, except a batch of payments, whose items each need their
// own savepoint.
type step func(ctx context.Context, tx pgx.Tx) (result any, writes *pgx.Batch, err error)

// safeFlow runs one idempotent request in one transaction, run again as a
// whole when PostgreSQL asks for it (see retrying).
func (s *Store) safeFlow(ctx context.Context, req domain.Request, fn step) (domain.Response, error) {
	var resp domain.Response
	err := s.retrying(ctx, func() (err error) {
		resp, err = s.safeFlowOnce(ctx, req, fn)
		return err
	})
	return resp, err
}

// retrying runs a transaction (tx) again on serialization failures,
// deadlocks and lock timeouts, with capped exponential backoff and full
// jitter, and makes its final error one a client can be shown.
func (s *Store) retrying(ctx context.Context, tx func() error) error {
	for attempt := 1; ; attempt++ {
		err := tx()
		reason := retryReason(err)
		if reason == "" {
			return public(err)
		}
		if attempt >= s.opt.MaxAttempts {
			return domain.Unavailable("the resources of this request are busy; nothing was applied, retry shortly (with the same Idempotency-Key, if any)")
		}
		s.opt.OnRetry(reason)
		if err := backoff.Sleep(ctx, backoff.FullJitter(s.opt.BackoffBase, s.opt.BackoffMax, attempt)); err != nil {
			return public(err)
		}
	}
}

// savepoint is taken right before the business writes, in the same round
// trip, so that a refusal raised by a write (a CHECK, the last line of
// defence) rolls back the writes and keeps the idempotency claim.
const savepoint = "safeflow_writes"

func (s *Store) safeFlowOnce(ctx context.Context, req domain.Request, fn step) (resp domain.Response, err error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return resp, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	stored, claimed, err := s.claim(ctx, tx, req)
	if err != nil {
		return resp, err
	}
	if !claimed {
		return stored, nil
	}

	result, writes, stepErr := fn(ctx, tx)
	stepErr = translate(stepErr)
	if stepErr == nil {
		// One round trip: savepoint, the writes, release, the stored response.
		if resp, err = req.Render(result, nil); err != nil {
			return resp, err
		}
		b := &pgx.Batch{}
		b.Queue("SAVEPOINT " + savepoint)
		b.QueuedQueries = append(b.QueuedQueries, writes.QueuedQueries...)
		b.Queue("RELEASE SAVEPOINT " + savepoint)
		s.queueComplete(b, req, resp)
		if stepErr = translate(tx.SendBatch(ctx, b).Close()); stepErr == nil {
			return resp, translate(tx.Commit(ctx))
		}
		if _, ok := storedRefusal(stepErr); !ok {
			return resp, stepErr
		}
		if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+savepoint); err != nil {
			return resp, err
		}
	}
	if _, ok := storedRefusal(stepErr); !ok {
		return resp, stepErr
	}
	// A deterministic refusal: nothing was written; store it as the answer.
	if resp, err = req.Render(nil, stepErr); err != nil {
		return resp, err
	}
	b := &pgx.Batch{}
	s.queueComplete(b, req, resp)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return resp, err
	}
	return resp, translate(tx.Commit(ctx))
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }
