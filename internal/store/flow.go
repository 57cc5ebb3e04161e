package store

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/safeflow/safeflow/internal/backoff"
	"github.com/safeflow/safeflow/internal/domain"
)

// step is the business part of a safe flow, in two parts.
//
// lock, when the step locks anything, queues its locking reads on the batch
// that begins the transaction and claims the key, so that they travel in
// the same round trip. Each is guarded by ifClaimed: it reads and locks
// nothing unless the claim took the key, so a duplicate that will replay
// waits for no business row. What they read is kept by the step's closure.
//
// decide decides on what lock read: it returns the result of the change and
// the writes that apply it, queued on a batch, or a *domain.Error. It may
// read more in tx (a system account's id the process has not cached yet),
// and a batch of payments writes its items itself, each chunk under its own
// savepoint.
type step[T any] struct {
	lock   func(b *pgx.Batch, k domain.Idempotency)
	decide func(ctx context.Context, tx pgx.Tx) (result T, writes *pgx.Batch, err error)
}

// ifClaimed guards a read queued behind the claim of a key ($1 the tenant,
// $2 the key). The only record of a key without an answer that a statement
// can see is one its own transaction claimed (a committed record always
// has its answer), so the guard holds exactly when the claim took the key.
// PostgreSQL evaluates it once, before it reads a row (a one-time filter),
// so an unclaimed key locks nothing.
const ifClaimed = ` AND EXISTS (SELECT FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND status_code IS NULL)`

// queueRows queues on b a read of rows of type R, kept in *into when the
// batch is read.
func queueRows[R any](b *pgx.Batch, into *[]R, query string, args ...any) {
	b.Queue(query, args...).Query(func(rows pgx.Rows) error {
		rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[R])
		*into = rs
		return err
	})
}

// safeFlow runs one idempotent request in one transaction, run again as a
// whole when PostgreSQL asks for it (see retrying).
func safeFlow[T any](ctx context.Context, s *Store, req domain.Request[T], st step[T]) (domain.Response, error) {
	var resp domain.Response
	err := s.retrying(ctx, func() (err error) {
		resp, err = safeFlowOnce(ctx, s, req, st)
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

// safeFlowOnce is one try of a safe flow, in two round trips when nothing
// waits: BEGIN, the claim of the key (or the answer stored on it, to
// replay) and the step's locking reads; then, once the step has decided,
// the savepoint, the writes, the answer stored on the key and the COMMIT.
// A refusal raised by a write rolls back to the savepoint and is stored
// instead, and a COMMIT that fails or whose reply is lost is looked into
// (commitFailed).
func safeFlowOnce[T any](ctx context.Context, s *Store, req domain.Request[T], st step[T]) (resp domain.Response, err error) {
	committed, ended := false, s.opt.Metrics.began()
	endErr := &err // what the metrics say the try ended with
	defer func() { ended(committed, *endErr) }()

	tx, release, err := s.acquireTx(ctx)
	if err != nil {
		return domain.Response{}, err
	}
	defer release()

	replay, claimed, err := s.beginAndClaim(ctx, tx, req.Idempotency, st.lock)
	if err != nil || !claimed {
		return replay, err
	}
	resp, writes, err := decided(ctx, tx, req, st.decide)
	if refusal, refused := storedRefusal(err); refused {
		resp, err = req.Refuse(refusal)
		writes = &pgx.Batch{}
	}
	if err != nil {
		return domain.Response{}, err
	}
	resp, err = finish(ctx, tx, req, resp, writes)
	var lost *commitLost
	if !errors.As(err, &lost) {
		committed = err == nil
		return resp, err
	}
	release() // before looking: the look needs a connection of its own, and this one is done
	resp, err = s.commitFailed(ctx, req.Idempotency, lost.err)
	committed, endErr = err == nil, &errCommitLost
	if err != nil && retryReason(err) == "" {
		err = domain.WithFailure(err, domain.Failure{Cause: "the COMMIT failed: " + cause(lost.err)})
	}
	return resp, err
}

// errCommitLost labels, in the metrics, a try whose COMMIT failed.
var errCommitLost = errors.New("store: the COMMIT failed")

// commitLost is finish's error when the COMMIT ran and failed, or may have
// run: its outcome is for commitFailed to tell.
type commitLost struct{ err error }

func (e *commitLost) Error() string { return "store: the COMMIT failed: " + e.err.Error() }

// savepoint is taken right before the business writes, in the same round
// trip, so that a refusal raised by a write (a CHECK, the last line of
// defence) rolls back the writes and keeps the idempotency claim.
const savepoint = "safeflow_writes"

// decided runs the step's decision and renders its answer; the writes come
// back wrapped in the savepoint.
func decided[T any](ctx context.Context, tx pgx.Tx, req domain.Request[T], decide func(context.Context, pgx.Tx) (T, *pgx.Batch, error)) (domain.Response, *pgx.Batch, error) {
	result, writes, err := decide(ctx, tx)
	if err != nil {
		return domain.Response{}, nil, translate(err)
	}
	resp, err := req.Render(result)
	if err != nil {
		return domain.Response{}, nil, err
	}
	b := &pgx.Batch{}
	b.Queue("SAVEPOINT " + savepoint)
	b.QueuedQueries = append(b.QueuedQueries, writes.QueuedQueries...)
	b.Queue("RELEASE SAVEPOINT " + savepoint)
	return resp, b, nil
}

// finish sends, in one round trip, the writes queued on b, the storing of
// resp on the key and the COMMIT. If a write is refused by the database
// (the last line of defence), the server skips what follows it, the COMMIT
// included: the transaction is rolled back to the savepoint, and the
// refusal stored and committed instead. The COMMIT runs to its end even if
// the client goes away meanwhile (cancelling it would leave its outcome
// unknown); if it may have run and failed, the error is a *commitLost.
func finish[T any](ctx context.Context, tx *openTx, req domain.Request[T], resp domain.Response, b *pgx.Batch) (domain.Response, error) {
	ctx = context.WithoutCancel(ctx)
	queueComplete(b, req.Idempotency, resp)
	aborted, err := tx.commitAfter(ctx, b)
	if err == nil {
		return resp, nil
	}
	if !aborted {
		return domain.Response{}, &commitLost{err}
	}
	err = translate(err)
	refusal, refused := storedRefusal(err)
	if !refused {
		return domain.Response{}, err
	}
	// Without arguments, pgx sends this as one simple-protocol message:
	// nothing is prepared while the transaction is in its aborted state.
	if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+savepoint); err != nil {
		return domain.Response{}, err
	}
	if resp, err = req.Refuse(refusal); err != nil {
		return domain.Response{}, err
	}
	b = &pgx.Batch{}
	queueComplete(b, req.Idempotency, resp)
	if aborted, err = tx.commitAfter(ctx, b); err != nil {
		if aborted {
			return domain.Response{}, err
		}
		return domain.Response{}, &commitLost{err}
	}
	return resp, nil
}
