package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/safeflow/safeflow/internal/domain"
)

// Hot rows. Requests that lock the same account one after another each
// hold its row lock for several round trips and a commit, then hand it to
// the next waiting backend. With Options.Coalesce the deposits and
// withdrawals one process has in flight for one account are run in one
// transaction that takes the account's lock once and commits once:
//
//   - each request keeps its own idempotency claim, its own decision (in
//     arrival order, on the books the previous ones left), its own ledger
//     lines, event and stored answer, each inside a savepoint of its own;
//   - a refusal of one (decided, or raised by a write) is stored for it and
//     changes no other's answer; a request whose claim is held by another
//     transaction, or that fails otherwise, is taken out and run alone after;
//   - the same request sent again within a group (same key, same body) gets
//     the first one's answer, replayed, without another round trip;
//   - a request never waits for a gathering window: a group is whatever
//     queued while the previous group of that account ran (alone when none);
//   - if the group as a whole fails (its lock, its COMMIT), nothing of it is
//     applied and every request runs alone, with its own retries (a COMMIT
//     whose reply is lost is looked into request by request).
//
// Several API processes on one database each coalesce their own; their
// groups take the account's row lock in turn like single requests do.

// maxGroup bounds a group: each request takes two subtransactions (its claim
// and its writes), and 64 per transaction is the most a backend caches.
const maxGroup = 24

// coalescer queues moves per account.
type coalescer struct {
	mu     sync.Mutex
	queues map[string]*moveQueue
}

type moveQueue struct{ pending []*moveReq }

type moveReq struct {
	ctx  context.Context
	req  domain.Request[domain.Movement]
	in   domain.NewMovement
	done chan moveResult
}

type moveResult struct {
	resp domain.Response
	err  error
}

func newCoalescer() *coalescer { return &coalescer{queues: map[string]*moveQueue{}} }

// submit queues the move and waits for its answer. The first move of an
// account starts the loop that runs its groups.
func (c *coalescer) submit(ctx context.Context, s *Store, req domain.Request[domain.Movement], in domain.NewMovement) (domain.Response, error) {
	r := &moveReq{ctx: ctx, req: req, in: in, done: make(chan moveResult, 1)}
	key := req.TenantID + "/" + in.AccountID
	c.mu.Lock()
	q, running := c.queues[key]
	if !running {
		q = &moveQueue{}
		c.queues[key] = q
	}
	q.pending = append(q.pending, r)
	c.mu.Unlock()
	if !running {
		go c.run(s, key, q)
	}
	res := <-r.done
	return res.resp, res.err
}

// run takes the account's queued moves, up to maxGroup at a time, until
// none is left.
func (c *coalescer) run(s *Store, key string, q *moveQueue) {
	for {
		c.mu.Lock()
		n := min(len(q.pending), maxGroup)
		group := q.pending[:n:n]
		q.pending = q.pending[n:]
		if n == 0 {
			delete(c.queues, key)
		}
		c.mu.Unlock()
		if n == 0 {
			return
		}
		if n == 1 {
			r := group[0]
			resp, err := s.moveAlone(r.ctx, r.req, r.in)
			r.done <- moveResult{resp, err}
			continue
		}
		s.opt.Metrics.coalesced(n)
		alone := s.moveGroup(group)
		for _, r := range alone {
			resp, err := s.moveAlone(r.ctx, r.req, r.in)
			r.done <- moveResult{resp, err}
		}
	}
}

// groupSavepoint and writesSavepoint isolate one request of a group, and
// its writes within it.
const (
	groupSavepoint  = "safeflow_request"
	releaseRequest  = "RELEASE SAVEPOINT " + groupSavepoint
	undoRequest     = "ROLLBACK TO SAVEPOINT " + groupSavepoint + "; RELEASE SAVEPOINT " + groupSavepoint
	claimLockTimout = "SET LOCAL lock_timeout = '50ms'"
)

// inGroup is what became of a request in its group's transaction.
type inGroup int

const (
	stored   inGroup = iota // claimed, applied or refused, its answer stored: valid if the group commits
	answered                // its key was finished before: replayed or refused, nothing written
	takenOut                // rolled back to its savepoint: it runs alone after the group
)

// moveGroup runs the group in one transaction and answers the requests it
// could; it returns those to run alone (all of them if the group failed).
func (s *Store) moveGroup(group []*moveReq) (alone []*moveReq) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	answers := map[*moveReq]moveResult{}
	outcomes := map[*moveReq]inGroup{}
	committed, err := s.moveGroupOnce(ctx, group, answers, outcomes)
	switch {
	case err == nil && committed:
	case errors.Is(err, errCommitLost):
		// The COMMIT's outcome is unknown: each request that stored its
		// answer looks into its own key; the others run again alone.
		for _, r := range group {
			switch outcomes[r] {
			case stored:
				resp, lerr := s.commitFailed(ctx, r.req.Idempotency, err)
				answers[r] = moveResult{resp, lerr}
			default:
				delete(answers, r)
				outcomes[r] = takenOut
			}
		}
	default: // nothing of the group was applied: each runs alone
		return group
	}
	for _, r := range group {
		if outcomes[r] == takenOut {
			alone = append(alone, r)
			continue
		}
		r.done <- answers[r]
	}
	return alone
}

// moveGroupOnce is the group's transaction. It records each request's
// answer (valid only if the transaction commits) and what became of it.
func (s *Store) moveGroupOnce(ctx context.Context, group []*moveReq, answers map[*moveReq]moveResult, outcomes map[*moveReq]inGroup) (committed bool, err error) {
	first := group[0]
	tenantID, accountID := first.req.TenantID, first.in.AccountID
	ended := s.opt.Metrics.began()
	defer func() { ended(committed, err) }()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Release()
	tx := &openTx{conn: conn.Conn()}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	b := &pgx.Batch{}
	for _, q := range s.beginStatements() {
		b.Queue(q)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return false, err
	}
	acct, err := getAccount(ctx, tx, tenantID, accountID, selectAccount+` FOR UPDATE`)
	if err != nil {
		return false, err // not found, or the lock: each alone says so
	}
	sys, err := s.systemAccountID(ctx, tx, tenantID, acct.Currency)
	if err != nil {
		return false, err
	}
	// A claim held by another transaction takes its request out rather
	// than make the whole group wait.
	if _, err := tx.Exec(ctx, claimLockTimout); err != nil {
		return false, err
	}
	firsts := map[string]*moveReq{} // by key: the group's first request with it
	for _, r := range group {
		if f, ok := firsts[r.req.Key]; ok && bytes.Equal(f.req.Fingerprint, r.req.Fingerprint) {
			// The same request again: the answer of the first, replayed.
			switch outcomes[f] {
			case takenOut:
				outcomes[r] = takenOut
			default:
				ans := answers[f]
				ans.resp.Replayed = ans.err == nil
				answers[r], outcomes[r] = ans, answered
			}
			continue
		}
		if _, ok := firsts[r.req.Key]; !ok {
			firsts[r.req.Key] = r
		}
		next, outcome, err := s.moveInGroup(ctx, tx, r, acct, sys, answers)
		if err != nil {
			return false, err
		}
		outcomes[r], acct = outcome, next
	}
	if err := tx.Commit(context.WithoutCancel(ctx)); err != nil {
		var pg *pgconn.PgError
		if errors.Is(err, pgx.ErrTxCommitRollback) || errors.As(err, &pg) && pg.Severity == "ERROR" {
			return false, err
		}
		conn.Release()
		return false, fmt.Errorf("%w: %w", errCommitLost, err)
	}
	return true, nil
}

// moveInGroup applies one request of a group inside its savepoint and
// returns the account after it and what became of the request; err fails
// the whole group.
func (s *Store) moveInGroup(ctx context.Context, tx *openTx, r *moveReq, acct domain.Account, sys string, answers map[*moveReq]moveResult) (domain.Account, inGroup, error) {
	req, now := r.req, s.now()
	b := &pgx.Batch{}
	b.Queue("SAVEPOINT " + groupSavepoint)
	c := s.queueClaim(b, req.Idempotency, now)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return acct, takenOut, s.undo(ctx, tx)
	}
	if resp, claimed, again, err := c.outcome(req.Idempotency); !claimed {
		// A key finished earlier (in this group too): its answer is final.
		// One that needs claiming again, or is broken, runs alone.
		var de *domain.Error
		if again || err != nil && !errors.As(err, &de) {
			return acct, takenOut, s.undo(ctx, tx)
		}
		answers[r] = moveResult{resp, err}
		return acct, answered, s.undo(ctx, tx)
	}
	p, derr := acct.Move(r.in, sys, now)
	var resp domain.Response
	var err error
	if derr == nil {
		resp, err = req.Render(p.Movement)
		if err != nil {
			return acct, takenOut, s.undo(ctx, tx)
		}
		b = &pgx.Batch{}
		b.Queue("SAVEPOINT " + savepoint)
		if err := queueMove(b, req.TenantID, r.in, p, now); err != nil {
			return acct, takenOut, s.undo(ctx, tx)
		}
		b.Queue("RELEASE SAVEPOINT " + savepoint)
		queueComplete(b, req.Idempotency, resp)
		b.Queue(releaseRequest)
		err = translate(tx.SendBatch(ctx, b).Close())
		if err == nil {
			answers[r] = moveResult{resp: resp}
			return p.Account, stored, nil
		}
		if _, refused := storedRefusal(err); !refused {
			return acct, takenOut, s.undo(ctx, tx)
		}
		if _, rbErr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+savepoint); rbErr != nil {
			return acct, takenOut, rbErr
		}
		derr = err
	}
	refusal, refused := storedRefusal(translate(derr))
	if !refused {
		return acct, takenOut, s.undo(ctx, tx)
	}
	if resp, err = req.Refuse(refusal); err != nil {
		return acct, takenOut, s.undo(ctx, tx)
	}
	b = &pgx.Batch{}
	queueComplete(b, req.Idempotency, resp)
	b.Queue(releaseRequest)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return acct, takenOut, s.undo(ctx, tx)
	}
	answers[r] = moveResult{resp: resp}
	return acct, stored, nil
}

// undo rolls a request of a group back to its savepoint; an error here
// fails the group.
func (s *Store) undo(ctx context.Context, tx *openTx) error {
	_, err := tx.Exec(ctx, undoRequest)
	return err
}
