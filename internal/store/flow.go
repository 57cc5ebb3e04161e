package store

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/safeflow/safeflow/internal/backoff"
	"github.com/safeflow/safeflow/internal/domain"
)

// step is the business part of a safe flow. It reads and locks what it
// needs in tx and decides: it returns the result of the change and the
// writes that apply it, queued on a batch, or a *domain.Error. A step
// writes nothing itself, except a batch of payments, whose items each need
// their own savepoint.
type step[T any] func(ctx context.Context, tx pgx.Tx) (result T, writes *pgx.Batch, err error)

// safeFlow runs one idempotent request in one transaction, run again as a
// whole when PostgreSQL asks for it (see retrying).
func safeFlow[T any](ctx context.Context, s *Store, req domain.Request[T], decide step[T]) (domain.Response, error) {
	var resp domain.Response
	err := s.retrying(ctx, func() (err error) {
		resp, err = safeFlowOnce(ctx, s, req, decide)
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
			return annotate(public(err), err, attempt)
		}
		if attempt >= s.opt.MaxAttempts {
			return annotate(domain.Unavailable("the resources of this request are busy; nothing was applied, retry shortly (with the same Idempotency-Key, if any)"), err, attempt)
		}
		s.opt.Metrics.retried(reason)
		if serr := backoff.Sleep(ctx, backoff.FullJitter(s.opt.BackoffBase, s.opt.BackoffMax, attempt)); serr != nil {
			return annotate(public(serr), serr, attempt)
		}
	}
}

// safeFlowOnce is one try of a safe flow: begin and claim the key in one
// round trip (or replay the answer stored on it), apply the change, store
// the refusal if it was refused, commit (and, if the COMMIT's reply is
// lost, learn its outcome: see commitFailed).
func safeFlowOnce[T any](ctx context.Context, s *Store, req domain.Request[T], decide step[T]) (resp domain.Response, err error) {
	committed, ended := false, s.opt.Metrics.began()
	endErr := &err // what the metrics say the try ended with
	defer func() { ended(committed, *endErr) }()

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return domain.Response{}, err
	}
	defer conn.Release()
	tx := &openTx{conn: conn.Conn()}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	replay, claimed, err := s.beginAndClaim(ctx, tx, req.Idempotency)
	if err != nil || !claimed {
		return replay, err
	}
	resp, err = apply(ctx, tx, req, decide)
	if refusal, refused := storedRefusal(err); refused {
		resp, err = storeRefusal(ctx, tx, req, refusal)
	}
	if err != nil {
		return domain.Response{}, err
	}
	// The COMMIT runs to its end even if the client goes away meanwhile:
	// cancelling it would leave its outcome unknown.
	if commitErr := tx.Commit(context.WithoutCancel(ctx)); commitErr != nil {
		conn.Release() // before looking: the look needs a connection of its own, and this one is done
		resp, err = s.commitFailed(ctx, req.Idempotency, commitErr)
		committed, endErr = err == nil, &errCommitLost
		if err != nil && retryReason(err) == "" {
			err = domain.WithFailure(err, domain.Failure{Cause: "the COMMIT failed: " + cause(commitErr)})
		}
		return resp, err
	}
	committed = true
	return resp, nil
}

// errCommitLost labels, in the metrics, a try whose COMMIT failed.
var errCommitLost = errors.New("store: the COMMIT failed")

// savepoint is taken right before the business writes, in the same round
// trip, so that a refusal raised by a write (a CHECK, the last line of
// defence) rolls back the writes and keeps the idempotency claim.
const savepoint = "safeflow_writes"

// apply decides, renders the answer to the change and sends, in one round
// trip: the savepoint, the change's writes and the answer stored on the
// key. A write the database refuses is rolled back to the savepoint and its
// refusal returned, for storeRefusal.
func apply[T any](ctx context.Context, tx pgx.Tx, req domain.Request[T], decide step[T]) (domain.Response, error) {
	result, writes, err := decide(ctx, tx)
	if err != nil {
		return domain.Response{}, translate(err)
	}
	resp, err := req.Render(result)
	if err != nil {
		return domain.Response{}, err
	}
	b := &pgx.Batch{}
	b.Queue("SAVEPOINT " + savepoint)
	b.QueuedQueries = append(b.QueuedQueries, writes.QueuedQueries...)
	b.Queue("RELEASE SAVEPOINT " + savepoint)
	queueComplete(b, req.Idempotency, resp)
	if err := translate(tx.SendBatch(ctx, b).Close()); err != nil {
		if _, refused := storedRefusal(err); refused {
			if _, rbErr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+savepoint); rbErr != nil {
				return domain.Response{}, rbErr
			}
		}
		return domain.Response{}, err
	}
	return resp, nil
}

// storeRefusal stores the answer to a refused request on its key. Nothing
// of the change was written, or it was rolled back to the savepoint.
func storeRefusal[T any](ctx context.Context, tx pgx.Tx, req domain.Request[T], refusal *domain.Error) (domain.Response, error) {
	resp, err := req.Refuse(refusal)
	if err != nil {
		return domain.Response{}, err
	}
	b := &pgx.Batch{}
	queueComplete(b, req.Idempotency, resp)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return domain.Response{}, err
	}
	return resp, nil
}
