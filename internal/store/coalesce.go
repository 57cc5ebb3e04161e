package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/safeflow/safeflow/internal/domain"
)

// Hot rows. Requests that lock the same account one after another each
// hold its row lock through their writes and commit, then hand it to the
// next waiting backend. With Options.Coalesce the requests one process has
// in flight for one hot account run in one transaction that takes the
// account's lock once and commits once: the deposits and withdrawals of an
// account, and the transitions that move a payee's books (confirm, settle,
// refund: many payments to one merchant).
//
//   - each request runs its own step, as it would alone (its claim, its
//     locking reads, its decision on what they read, its writes, its stored
//     answer), inside a savepoint of its own, in arrival order: it sees
//     what the requests before it in the group wrote;
//   - a refusal of one (decided, or raised by a write) is stored for it and
//     changes no other's answer; a request whose claim or rows are held by
//     another transaction (past 50 ms), or that fails otherwise, is taken
//     out and run alone after;
//   - the same request sent again within a group (same key, same body) gets
//     the first one's answer, replayed, without another round trip;
//   - a request never waits for a gathering window: a group is whatever
//     queued while the previous group of that account ran (alone when none);
//   - if the group as a whole fails (its lock, its COMMIT), nothing of it is
//     applied and every request runs alone, with its own retries (a COMMIT
//     whose reply is lost is looked into request by request).
//
// The group locks the hot account before its requests claim their keys and
// lock their other rows (a payment, its payer), against the global lock
// order; the 50 ms lock_timeout of those steps is what keeps that from
// deadlocking: a request that would wait is taken out instead.
//
// Several API processes on one database each coalesce their own; their
// groups take the account's row lock in turn like single requests do.

// maxGroup bounds a group: each request takes two subtransactions (its claim
// and its writes), and 64 per transaction is the most a backend caches.
const maxGroup = 24

// coalescer queues the requests of one kind (T: what their steps decide)
// by the hot account they lock.
type coalescer[T any] struct {
	mu     sync.Mutex
	queues map[hotRow][]*member[T]
}

// hotRow is the account a group locks first.
type hotRow struct{ tenantID, accountID string }

// member is a request waiting in a coalescer, with the step it runs.
type member[T any] struct {
	ctx  context.Context
	req  domain.Request[T]
	step step[T]
	done chan groupResult
}

type groupResult struct {
	resp domain.Response
	err  error
}

func newCoalescer[T any]() *coalescer[T] { return &coalescer[T]{queues: map[hotRow][]*member[T]{}} }

// submit queues the request and waits for its answer. The first request of
// an account starts the loop that runs its groups.
func (c *coalescer[T]) submit(ctx context.Context, s *Store, hot hotRow, req domain.Request[T], st step[T]) (domain.Response, error) {
	m := &member[T]{ctx: ctx, req: req, step: st, done: make(chan groupResult, 1)}
	c.mu.Lock()
	q, running := c.queues[hot]
	c.queues[hot] = append(q, m)
	c.mu.Unlock()
	if !running {
		go c.run(s, hot)
	}
	res := <-m.done
	return res.resp, res.err
}

// run takes the account's queued requests, up to maxGroup at a time,
// until none is left.
func (c *coalescer[T]) run(s *Store, hot hotRow) {
	for {
		c.mu.Lock()
		q := c.queues[hot]
		n := min(len(q), maxGroup)
		group := q[:n:n]
		if n == 0 {
			delete(c.queues, hot)
		} else {
			c.queues[hot] = q[n:]
		}
		c.mu.Unlock()
		if n == 0 {
			return
		}
		alone := group
		if n > 1 {
			s.opt.Metrics.coalesced(n)
			alone = runGroup(s, hot, group)
		}
		for _, m := range alone {
			resp, err := safeFlow(m.ctx, s, m.req, m.step)
			m.done <- groupResult{resp, err}
		}
	}
}

// groupSavepoint isolates one request of a group (its writes have the
// savepoint of the safe flow within it).
const (
	groupSavepoint  = "safeflow_request"
	releaseRequest  = "RELEASE SAVEPOINT " + groupSavepoint
	undoRequest     = "ROLLBACK TO SAVEPOINT " + groupSavepoint + "; RELEASE SAVEPOINT " + groupSavepoint
	claimLockTimout = "SET LOCAL lock_timeout = '50ms'"
	lockHotAccount  = `SELECT id FROM accounts WHERE tenant_id = $1 AND id = $2 AND kind = 'customer' FOR UPDATE`
)

// inGroup is what became of a request in its group's transaction.
type inGroup int

const (
	stored   inGroup = iota // claimed, applied or refused, its answer stored: valid if the group commits
	answered                // its key was finished before: replayed or refused, nothing written
	takenOut                // rolled back to its savepoint: it runs alone after the group
)

// runGroup runs the group in one transaction and answers the requests it
// could; it returns those to run alone (all of them if the group failed).
func runGroup[T any](s *Store, hot hotRow, group []*member[T]) (alone []*member[T]) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	answers := map[*member[T]]groupResult{}
	outcomes := map[*member[T]]inGroup{}
	committed, err := groupOnce(ctx, s, hot, group, answers, outcomes)
	switch {
	case err == nil && committed:
	case errors.Is(err, errCommitLost):
		// The COMMIT's outcome is unknown: each request that stored its
		// answer looks into its own key; the others run again alone.
		for _, m := range group {
			switch outcomes[m] {
			case stored:
				resp, lerr := s.commitFailed(ctx, m.req.Idempotency, err)
				answers[m] = groupResult{resp, lerr}
			default:
				delete(answers, m)
				outcomes[m] = takenOut
			}
		}
	default: // nothing of the group was applied: each runs alone
		return group
	}
	for _, m := range group {
		if outcomes[m] == takenOut {
			alone = append(alone, m)
			continue
		}
		m.done <- answers[m]
	}
	return alone
}

// groupOnce is the group's transaction. It records each request's answer
// (valid only if the transaction commits) and what became of it.
func groupOnce[T any](ctx context.Context, s *Store, hot hotRow, group []*member[T], answers map[*member[T]]groupResult, outcomes map[*member[T]]inGroup) (committed bool, err error) {
	ended := s.opt.Metrics.began()
	defer func() { ended(committed, err) }()
	tx, release, err := s.acquireTx(ctx)
	if err != nil {
		return false, err
	}
	defer release()

	// BEGIN, the hot account's lock (waiting as long as a request would),
	// then a short lock_timeout for everything the requests lock: a claim
	// or a row held by another transaction takes its request out rather
	// than make the whole group wait.
	b := &pgx.Batch{}
	s.queueBegin(b)
	var found bool
	b.Queue(lockHotAccount, hot.tenantID, hot.accountID).Exec(func(ct pgconn.CommandTag) error {
		found = ct.RowsAffected() == 1
		return nil
	})
	b.Queue(claimLockTimout)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return false, err
	}
	if !found {
		return false, errors.New("store: the hot account is gone") // each alone says what it is
	}
	firsts := map[string]*member[T]{} // by key: the group's first request with it
	for _, m := range group {
		if f, ok := firsts[m.req.Key]; ok && bytes.Equal(f.req.Fingerprint, m.req.Fingerprint) {
			// The same request again: the answer of the first, replayed.
			switch outcomes[f] {
			case takenOut:
				outcomes[m] = takenOut
			default:
				ans := answers[f]
				ans.resp.Replayed = ans.err == nil
				answers[m], outcomes[m] = ans, answered
			}
			continue
		}
		if _, ok := firsts[m.req.Key]; !ok {
			firsts[m.req.Key] = m
		}
		outcome, err := runInGroup(ctx, s, tx, m, answers)
		if err != nil {
			return false, err
		}
		outcomes[m] = outcome
	}
	if err := tx.Commit(context.WithoutCancel(ctx)); err != nil {
		if rolledBack(err) {
			return false, err
		}
		release()
		return false, fmt.Errorf("%w: %w", errCommitLost, err)
	}
	return true, nil
}

// runInGroup runs one request's step inside its savepoint, as safeFlowOnce
// would alone: its claim with its locking reads in one round trip, its
// writes with its stored answer in another. It returns what became of the
// request; err fails the whole group.
func runInGroup[T any](ctx context.Context, s *Store, tx *openTx, m *member[T], answers map[*member[T]]groupResult) (inGroup, error) {
	req := m.req
	b := &pgx.Batch{}
	b.Queue("SAVEPOINT " + groupSavepoint)
	c := s.queueClaim(b, req.Idempotency, s.now())
	if m.step.lock != nil {
		m.step.lock(b, req.Idempotency)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return takenOut, s.undo(ctx, tx)
	}
	if resp, claimed, again, err := c.outcome(req.Idempotency); !claimed {
		// A key finished earlier (in this group too): its answer is final.
		// One that needs claiming again, or is broken, runs alone.
		var de *domain.Error
		if again || err != nil && !errors.As(err, &de) {
			return takenOut, s.undo(ctx, tx)
		}
		answers[m] = groupResult{resp, err}
		return answered, s.undo(ctx, tx)
	}
	resp, writes, err := decided(ctx, tx, req, m.step.decide)
	if refusal, refused := storedRefusal(err); refused {
		resp, err = req.Refuse(refusal)
		writes = &pgx.Batch{}
	}
	if err != nil {
		return takenOut, s.undo(ctx, tx)
	}
	queueComplete(writes, req.Idempotency, resp)
	writes.Queue(releaseRequest)
	err = translate(tx.SendBatch(ctx, writes).Close())
	if err == nil {
		answers[m] = groupResult{resp: resp}
		return stored, nil
	}
	refusal, refused := storedRefusal(err)
	if !refused { // a write failed: nothing of this request stays
		return takenOut, s.undo(ctx, tx)
	}
	// A refusal raised by a write: its writes roll back, the refusal is
	// stored. Without arguments, pgx sends this as one simple-protocol
	// message: nothing is prepared while the transaction is aborted.
	if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+savepoint); err != nil {
		return takenOut, err
	}
	if resp, err = req.Refuse(refusal); err != nil {
		return takenOut, s.undo(ctx, tx)
	}
	b = &pgx.Batch{}
	queueComplete(b, req.Idempotency, resp)
	b.Queue(releaseRequest)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return takenOut, s.undo(ctx, tx)
	}
	answers[m] = groupResult{resp: resp}
	return stored, nil
}

// undo rolls a request of a group back to its savepoint; an error here
// fails the group.
func (s *Store) undo(ctx context.Context, tx *openTx) error {
	_, err := tx.Exec(ctx, undoRequest)
	return err
}

// payees remembers the payee of the payments this process created or
// moved (a payment's payee never changes), so that a transition can be
// queued by its payee before it reads the payment. It forgets everything
// past maxPayees entries; a transition whose payee it does not know runs
// alone.
type payees struct {
	m sync.Map // payment id → payee account id
	n atomic.Int64
}

const maxPayees = 100_000

func (p *payees) remember(pay domain.Payment) {
	if _, loaded := p.m.LoadOrStore(pay.ID, pay.PayeeAccountID); !loaded && p.n.Add(1) > maxPayees {
		p.m.Clear()
		p.n.Store(0)
	}
}

func (p *payees) of(paymentID string) (string, bool) {
	v, ok := p.m.Load(paymentID)
	if !ok {
		return "", false
	}
	return v.(string), true
}
