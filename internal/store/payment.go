package store

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/outbox"
)

// Lock order. Every transaction locks at most one payment, and locks it
// before any account; accounts are locked by one statement in ascending id
// order. So no two transactions can wait for each other in a cycle.

const insertPayment = `
INSERT INTO payments (id, tenant_id, status, amount, currency, payer_account_id, payee_account_id,
                      description, metadata, version, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`

// The status and version guard is the last line of defence behind the row
// lock; the trigger payments_transition_allowed is the final one.
var updatePayment = guardedOne(`
UPDATE payments SET status = $3, version = $4, updated_at = $5
WHERE tenant_id = $1 AND id = $2 AND status = $6 AND version = $4 - 1`, "a payment")

const insertTransition = `
INSERT INTO payment_transitions (payment_id, version, tenant_id, action, from_status, to_status, journal_id, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`

// queuePaymentChange queues everything a payment transition writes: the
// payment (inserted or guarded update), its history row, the journal, the
// moved books of the accounts and the event.
func queuePaymentChange(b *pgx.Batch, c domain.PaymentChange) error {
	p, t := c.Payment, c.Transition
	if t.Action == domain.ActionCreate {
		b.Queue(insertPayment, p.ID, p.TenantID, p.Status, p.Amount, p.Currency, p.PayerAccountID, p.PayeeAccountID,
			p.Description, p.Metadata, p.Version, p.CreatedAt, p.UpdatedAt)
	} else {
		b.Queue(updatePayment, p.TenantID, p.ID, p.Status, p.Version, p.UpdatedAt, t.From)
	}
	b.Queue(insertTransition, p.ID, p.Version, p.TenantID, t.Action, nullable(t.From), t.To, c.JournalID, p.UpdatedAt)
	queueEntries(b, p.TenantID, c.Lines)
	for _, a := range c.Accounts {
		b.Queue(updateBooks, p.TenantID, a.ID, a.Balances.Available, a.Balances.Held, a.Balances.Incoming, a.Version)
	}
	return outbox.Stage(b, outbox.Message{
		ID: domain.NewID(domain.PrefixEvent, p.UpdatedAt), TenantID: p.TenantID, Type: t.Event,
		AggregateType: "payment", AggregateID: p.ID, Sequence: p.Version, Data: p, CreatedAt: p.UpdatedAt,
	})
}

// CreatePayment creates a pending payment and holds its amount on the
// payer: it locks the payer FOR UPDATE and the payee FOR KEY SHARE (the
// lock the payment's foreign key takes anyway: a creation does not move
// the payee's books), in ascending id order, decides, and writes the
// payment, its journal, the payer's books and payment.created. Payments to
// one payee so do not wait for each other's creation.
func (s *Store) CreatePayment(ctx context.Context, req domain.Request[domain.Payment], in domain.NewPayment) (domain.Response, error) {
	var payer, payee *accountSet
	return safeFlow(ctx, s, req, step[domain.Payment]{
		lock: func(b *pgx.Batch, k domain.Idempotency) {
			if in.PayerAccountID < in.PayeeAccountID {
				payer = queueAccounts(b, k, lockAccounts, in.PayerAccountID)
				payee = queueAccounts(b, k, shareAccounts, in.PayeeAccountID)
			} else {
				payee = queueAccounts(b, k, shareAccounts, in.PayeeAccountID)
				payer = queueAccounts(b, k, lockAccounts, in.PayerAccountID)
			}
		},
		decide: func(context.Context, pgx.Tx) (domain.Payment, *pgx.Batch, error) {
			return s.planned(in.Create(req.TenantID, payee.into(payer.into(nil)), s.now()))
		},
	})
}

// lockPayment locks the tenant's payment ($3) and lockParties the accounts
// whose books its transition moves ($4 the payer's, $5 the payee's), in
// ascending id order, after it; both when the transaction claimed its key
// (ifClaimed). A payment's accounts never change, so the second statement
// may read them off the row the first one locked.
const (
	lockPayment = `SELECT ` + paymentColumns + ` FROM payments WHERE tenant_id = $1 AND id = $3` + ifClaimed + ` FOR UPDATE`
	lockParties = `SELECT ` + accountColumns + ` FROM accounts
WHERE tenant_id = $1 AND kind = 'customer' AND id IN (
    SELECT unnest(ARRAY[CASE WHEN $4 THEN payer_account_id END, CASE WHEN $5 THEN payee_account_id END])
    FROM payments WHERE tenant_id = $1 AND id = $3)` + ifClaimed + `
ORDER BY id FOR UPDATE`
)

// TransitionPayment runs action (confirm, settle, cancel, refund) on the
// tenant's payment id under the If-Match precondition: it locks the
// payment, then the accounts the action moves, in ascending id order. With
// Options.Coalesce, concurrent transitions that move one payee's books
// share a transaction (coalesce.go), when this process knows the payee.
func (s *Store) TransitionPayment(ctx context.Context, req domain.Request[domain.Payment], id, action string, pre domain.Precondition) (domain.Response, error) {
	st := s.transitionStep(req, id, action, pre)
	if _, movesPayee := domain.ActionParties(action); movesPayee && s.transitions != nil {
		if payee, ok := s.payees.of(id); ok {
			return s.transitions.submit(ctx, s, hotRow{req.TenantID, payee}, req, st)
		}
	}
	return safeFlow(ctx, s, req, st)
}

// transitionStep is the step of a payment's transition.
func (s *Store) transitionStep(req domain.Request[domain.Payment], id, action string, pre domain.Precondition) step[domain.Payment] {
	var payments []paymentRow
	var parties accountSet
	return step[domain.Payment]{
		lock: func(b *pgx.Batch, k domain.Idempotency) {
			if domain.ValidID(domain.PrefixPayment, id) {
				payer, payee := domain.ActionParties(action)
				queueRows(b, &payments, lockPayment, k.TenantID, k.Key, id)
				queueRows(b, &parties.rows, lockParties, k.TenantID, k.Key, id, payer, payee)
			}
		},
		decide: func(context.Context, pgx.Tx) (domain.Payment, *pgx.Batch, error) {
			if len(payments) != 1 {
				return domain.Payment{}, nil, domain.NotFound("payment", id)
			}
			p := payments[0].payment()
			t, err := p.Check(action, pre)
			if err != nil {
				return domain.Payment{}, nil, err
			}
			locked := parties.into(nil)
			for _, party := range t.Parties() {
				if _, ok := locked[p.Account(party)]; !ok {
					return domain.Payment{}, nil, errors.New("store: an account of payment " + p.ID + " is missing")
				}
			}
			return s.planned(p.Apply(t, locked[p.PayerAccountID], locked[p.PayeeAccountID], s.now()))
		},
	}
}

// planned turns a decided payment change into the step's result and
// writes, and remembers the payment's payee (see payees).
func (s *Store) planned(c domain.PaymentChange, err error) (domain.Payment, *pgx.Batch, error) {
	if err != nil {
		return domain.Payment{}, nil, err
	}
	s.payees.remember(c.Payment)
	b := &pgx.Batch{}
	if err := queuePaymentChange(b, c); err != nil {
		return domain.Payment{}, nil, err
	}
	return c.Payment, b, nil
}

// CreatePayments creates a batch of payments in one transaction. All the
// accounts of the batch are locked first, by one statement in ascending id
// order, so concurrent batches (and single requests) cannot deadlock. Each
// item is then decided on the locked books as the items before it left
// them, and written in its own savepoint: an item the domain or the
// database refuses is rolled back to its savepoint and reported, and the
// others commit. The batch's response is stored under its one key.
func (s *Store) CreatePayments(ctx context.Context, req domain.Request[[]domain.BatchItem], items []domain.NewPayment) (domain.Response, error) {
	var locked *accountSet
	return safeFlow(ctx, s, req, step[[]domain.BatchItem]{lock: func(b *pgx.Batch, k domain.Idempotency) {
		ids := make([]string, 0, 2*len(items))
		for _, in := range items {
			ids = append(ids, in.PayerAccountID, in.PayeeAccountID)
		}
		locked = queueAccounts(b, k, lockAccounts, ids...)
	}, decide: func(ctx context.Context, tx pgx.Tx) ([]domain.BatchItem, *pgx.Batch, error) {
		locked := locked.into(nil)
		now := s.now()
		out := make([]domain.BatchItem, len(items))
		for start := 0; start < len(items); start += batchChunk {
			end := min(start+batchChunk, len(items))
			if err := createChunk(ctx, tx, req.TenantID, items[start:end], locked, out[start:end], now); err != nil {
				return nil, nil, err // transient or internal: the whole batch fails, nothing is kept
			}
		}
		return out, &pgx.Batch{}, nil
	}})
}

// batchChunk is how many items of a batch are written under one savepoint.
// Every savepoint that writes is a subtransaction, and a transaction with
// more than 64 of them overflows its backend's subtransaction cache: from
// then on every snapshot taken anywhere on the server may have to look
// transactions up in pg_subtrans (an SLRU shared by all sessions). 1000
// items in chunks of 50 take 20.
const batchChunk = 50

// createChunk decides the items of a chunk in order (each on the books the
// previous ones left) and writes them in one round trip under one
// savepoint. Refusals the domain decides are answers, not failures. If the
// database refuses a write (the last line of defence), the chunk is rolled
// back (an aborted subtransaction leaves the cache) and its halves are
// done again the same way, down to the one item that is refused: a refused
// item costs about two savepoints per halving, not one per item.
func createChunk(ctx context.Context, tx pgx.Tx, tenantID string, items []domain.NewPayment, locked map[string]domain.Account, out []domain.BatchItem, now time.Time) error {
	trial := maps.Clone(locked)
	decided := make([]domain.BatchItem, len(items))
	b := &pgx.Batch{}
	b.Queue("SAVEPOINT " + itemSavepoint)
	for i, in := range items {
		c, err := in.Create(tenantID, trial, now)
		if refusal, refused := storedRefusal(err); refused {
			decided[i].Refusal = refusal
			continue
		} else if err != nil {
			return err
		}
		if err := queuePaymentChange(b, c); err != nil {
			return err
		}
		for _, a := range c.Accounts {
			trial[a.ID] = a
		}
		decided[i].Payment = c.Payment
	}
	b.Queue("RELEASE SAVEPOINT " + itemSavepoint)
	err := translate(tx.SendBatch(ctx, b).Close())
	if err == nil {
		maps.Copy(locked, trial)
		copy(out, decided)
		return nil
	}
	refusal, refused := storedRefusal(err)
	if !refused {
		return err
	}
	// Roll back and also release it, so that the next savepoint is not
	// nested inside this one. Without arguments, pgx sends this as one
	// simple-protocol message: nothing is prepared while the transaction
	// is in its aborted state.
	if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+itemSavepoint+"; RELEASE SAVEPOINT "+itemSavepoint); err != nil {
		return err
	}
	if len(items) == 1 {
		out[0].Refusal = refusal
		return nil
	}
	mid := len(items) / 2
	if err := createChunk(ctx, tx, tenantID, items[:mid], locked, out[:mid], now); err != nil {
		return err
	}
	return createChunk(ctx, tx, tenantID, items[mid:], locked, out[mid:], now)
}

// itemSavepoint isolates a chunk of a batch.
const itemSavepoint = "safeflow_item"

const paymentColumns = `id, tenant_id, status, amount, currency, payer_account_id, payee_account_id,
description, metadata, version, created_at, updated_at`

type paymentRow struct {
	ID             string            `db:"id"`
	TenantID       string            `db:"tenant_id"`
	Status         string            `db:"status"`
	Amount         int64             `db:"amount"`
	Currency       string            `db:"currency"`
	PayerAccountID string            `db:"payer_account_id"`
	PayeeAccountID string            `db:"payee_account_id"`
	Description    *string           `db:"description"`
	Metadata       map[string]string `db:"metadata"`
	Version        int64             `db:"version"`
	CreatedAt      time.Time         `db:"created_at"`
	UpdatedAt      time.Time         `db:"updated_at"`
}

func (r paymentRow) payment() domain.Payment {
	md := r.Metadata
	if md == nil {
		md = map[string]string{}
	}
	return domain.Payment{
		ID: r.ID, Object: "payment", Status: r.Status, Amount: r.Amount, Currency: r.Currency,
		PayerAccountID: r.PayerAccountID, PayeeAccountID: r.PayeeAccountID, Description: r.Description,
		Metadata: md, Version: r.Version, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(), TenantID: r.TenantID,
	}
}

const selectPayment = `SELECT ` + paymentColumns + ` FROM payments WHERE tenant_id = $1 AND id = $2`

func getPayment(ctx context.Context, q querier, tenantID, id, query string) (domain.Payment, error) {
	r, err := findOne[paymentRow](ctx, q, query, "payment", domain.PrefixPayment, tenantID, id)
	if err != nil {
		return domain.Payment{}, err
	}
	return r.payment(), nil
}

// GetPayment returns the tenant's payment id.
func (s *Store) GetPayment(ctx context.Context, tenantID, id string) (domain.Payment, error) {
	p, err := getPayment(ctx, s.opt.Read, tenantID, id, selectPayment)
	return p, public(err)
}

// The account filter is two index scans (payer, payee) merged by id, each
// stopped at the page size, rather than one scan filtering on either column.
const listPayments = `SELECT ` + paymentColumns + ` FROM (
    SELECT * FROM payments
    WHERE tenant_id = $1 AND $3 = '' AND ($2 = '' OR status = $2) AND ($4 = '' OR id < $4)
    ORDER BY id DESC LIMIT $5
) all_payments
UNION ALL
SELECT ` + paymentColumns + ` FROM (
    SELECT * FROM payments
    WHERE tenant_id = $1 AND $3 <> '' AND payer_account_id = $3 AND ($2 = '' OR status = $2) AND ($4 = '' OR id < $4)
    ORDER BY id DESC LIMIT $5
) by_payer
UNION ALL
SELECT ` + paymentColumns + ` FROM (
    SELECT * FROM payments
    WHERE tenant_id = $1 AND $3 <> '' AND payee_account_id = $3 AND ($2 = '' OR status = $2) AND ($4 = '' OR id < $4)
    ORDER BY id DESC LIMIT $5
) by_payee
ORDER BY id DESC LIMIT $5`

// ListPayments returns a page of the tenant's payments, newest first,
// filtered by status and by account (as payer or payee).
func (s *Store) ListPayments(ctx context.Context, tenantID string, f domain.PaymentFilter, p domain.Page) ([]domain.Payment, string, error) {
	rows, _ := s.opt.Read.Query(ctx, listPayments, tenantID, f.Status, f.AccountID, p.After, p.Limit+1)
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[paymentRow])
	if err != nil {
		return nil, "", public(err)
	}
	out := make([]domain.Payment, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.payment())
	}
	out, next := domain.Paginate(out, p.Limit, func(x domain.Payment) string { return x.ID })
	return out, next, nil
}
