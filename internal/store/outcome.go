package store

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/safeflow/safeflow/internal/backoff"
	"github.com/safeflow/safeflow/internal/domain"
)

// A COMMIT whose reply is lost (the connection died, the server crashed or
// terminated the backend) may have committed: PostgreSQL may have made it
// durable before the reply went out. Answering "nothing was applied" would
// then be false, and the client's retry would replay a 201 it was told had
// not happened. So the server finds out before it answers (product.md §3).
//
// It looks through the request's own idempotency key, which the lost
// transaction claimed. A plain read is not enough: the old backend may still
// be finishing that COMMIT when a new connection looks, and a read that
// finds no key would prove nothing. Claiming the key again (and rolling the
// claim back) waits on the old transaction's row lock until it ends, as a
// concurrent duplicate does:
//   - the claim succeeds: the old transaction rolled back; nothing was applied;
//   - it conflicts with a completed record of this request: it committed;
//     the stored answer is this request's answer;
//   - it is still waiting at lock_timeout, or the database cannot be reached
//     within outcomeBudget: the outcome is unknown (503 outcome_unknown; a
//     retry with the same key learns it).

// outcomeBudget bounds the time spent learning a COMMIT's outcome,
// reconnections after a crash included.
const outcomeBudget = 3 * time.Second

// commitFailed turns the error of a safe flow's COMMIT into the request's
// answer: the stored answer if it committed, else an error.
func (s *Store) commitFailed(ctx context.Context, req domain.Idempotency, err error) (domain.Response, error) {
	var resp domain.Response
	err = s.learnOutcome(ctx, err, func(ctx context.Context) (committed, known bool, err error) {
		resp, committed, known, err = s.lookForCommit(ctx, req)
		return committed, known, err
	})
	if err != nil {
		return domain.Response{}, err
	}
	return resp, nil
}

// rolledBack tells whether a COMMIT's error says the transaction rolled
// back: an ERROR the server reported for the COMMIT itself. Anything else
// (no reply, a FATAL) leaves its outcome unknown.
func rolledBack(commitErr error) bool {
	var pg *pgconn.PgError
	return errors.Is(commitErr, pgx.ErrTxCommitRollback) || errors.As(commitErr, &pg) && pg.Severity == "ERROR"
}

// learnOutcome returns nil if the transaction whose COMMIT failed with
// commitErr committed after all, as look tells. An ERROR reported by the
// server for the COMMIT itself means it rolled back (a serialization failure
// there is retried like any other); a lost reply or a FATAL leaves the
// outcome to look for, again while the database cannot be reached, for up
// to outcomeBudget.
func (s *Store) learnOutcome(ctx context.Context, commitErr error, look func(context.Context) (committed, known bool, err error)) error {
	if rolledBack(commitErr) {
		return translate(commitErr)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), outcomeBudget)
	defer cancel()
	for try := 1; ; try++ {
		committed, known, err := look(ctx)
		switch {
		case known && committed:
			s.opt.Metrics.commitOutcome("committed")
			return nil
		case known:
			s.opt.Metrics.commitOutcome("rolled_back")
			return domain.Unavailable("the database connection was lost before this request committed; nothing was applied, retry with the same Idempotency-Key")
		case err == nil || !unavailable(err) || backoff.Sleep(ctx, backoff.FullJitter(50*time.Millisecond, 500*time.Millisecond, try)) != nil:
			s.opt.Metrics.commitOutcome("unknown")
			return domain.OutcomeUnknown()
		}
	}
}

// lookForCommit claims req's key again, in a transaction it rolls back,
// to learn whether the transaction that claimed it before committed.
// known is false when it could not tell: the old transaction is still
// running past lock_timeout, or the look failed (lookErr).
func (s *Store) lookForCommit(ctx context.Context, req domain.Idempotency) (resp domain.Response, committed, known bool, lookErr error) {
	tx, release, err := s.acquireTx(ctx)
	if err != nil {
		return domain.Response{}, false, false, err
	}
	defer release()
	b := &pgx.Batch{}
	s.queueBegin(b)
	c := s.queueClaim(b, req, s.now())
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return domain.Response{}, false, false, err // 55P03: still running
	}
	switch {
	case c.inserted:
		return domain.Response{}, false, true, nil // the claim was free: it rolled back
	case !c.found: // no row: purged the instant it committed? Do not guess.
		return domain.Response{}, false, false, nil
	case !bytes.Equal(c.r.fingerprint, req.Fingerprint):
		return domain.Response{}, false, true, nil // another request claimed the freed key since
	case c.r.status == nil:
		return domain.Response{}, false, false, nil // held by a new claim of the same request: cannot tell
	}
	resp = c.r.response()
	resp.Replayed = false // the answer to this very request, not a replay
	return resp, true, true, nil
}
