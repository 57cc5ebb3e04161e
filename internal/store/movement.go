package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/outbox"
)

const selectSystemAccount = `SELECT id FROM accounts WHERE tenant_id = $1 AND currency = $2 AND kind = 'system'`

// systemAccountID returns the id of the tenant's system account for currency.
// It is read, never locked: the system account's books are not cached on its
// row, so movements never contend for it.
func (s *Store) systemAccountID(ctx context.Context, tx pgx.Tx, tenantID, currency string) (string, error) {
	k := tenantID + "/" + currency
	if id, ok := s.systemIDs.Load(k); ok {
		return id.(string), nil
	}
	var id string
	if err := tx.QueryRow(ctx, selectSystemAccount, tenantID, currency).Scan(&id); err != nil {
		return "", err
	}
	s.systemIDs.Store(k, id) // committed and immutable: safe to remember
	return id, nil
}

const insertMovement = `
INSERT INTO movements (id, tenant_id, kind, account_id, amount, currency, reference, journal_id, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`

const insertEntries = `
INSERT INTO ledger_entries (id, tenant_id, journal_id, account_id, book, amount, currency, created_at)
SELECT unnest($1::text[]), $2, $3, unnest($4::text[]), unnest($5::text[]), unnest($6::bigint[]), $7, $8`

// The version guard is the last line of defence behind the row lock; the
// CHECK constraint on the books is the final one.
var updateBooks = guardedOne(`
UPDATE accounts SET available = $3, held = $4, incoming = $5, version = $6
WHERE tenant_id = $1 AND id = $2 AND version = $6 - 1`, "account books")

// Move applies a deposit or a withdrawal: it locks the account, decides the
// posting, and queues the movement, its two ledger lines, the new books and
// the event, which the safe flow writes in one round trip. With
// Options.Coalesce, concurrent moves on one account share a transaction
// (coalesce.go).
func (s *Store) Move(ctx context.Context, req domain.Request[domain.Movement], in domain.NewMovement) (domain.Response, error) {
	if s.moves != nil {
		return s.moves.submit(ctx, s, hotRow{req.TenantID, in.AccountID}, req, s.moveStep(req, in))
	}
	return safeFlow(ctx, s, req, s.moveStep(req, in))
}

// moveStep is the step of a move.
func (s *Store) moveStep(req domain.Request[domain.Movement], in domain.NewMovement) step[domain.Movement] {
	var locked *accountSet
	return step[domain.Movement]{
		lock: func(b *pgx.Batch, k domain.Idempotency) { locked = queueAccounts(b, k, lockAccounts, in.AccountID) },
		decide: func(ctx context.Context, tx pgx.Tx) (domain.Movement, *pgx.Batch, error) {
			acct, ok := locked.into(nil)[in.AccountID]
			if !ok {
				return domain.Movement{}, nil, domain.NotFound("account", in.AccountID)
			}
			sys, err := s.systemAccountID(ctx, tx, req.TenantID, acct.Currency)
			if err != nil {
				return domain.Movement{}, nil, err
			}
			now := s.now()
			p, err := acct.Move(in, sys, now)
			if err != nil {
				return domain.Movement{}, nil, err
			}
			b := &pgx.Batch{}
			if err := queueMove(b, req.TenantID, in, p, now); err != nil {
				return domain.Movement{}, nil, err
			}
			return p.Movement, b, nil
		},
	}
}

// queueMove queues the writes of a decided move: the movement, its lines,
// the account's new books (guarded by its version) and the event.
func queueMove(b *pgx.Batch, tenantID string, in domain.NewMovement, p domain.Posting, now time.Time) error {
	m, a := p.Movement, p.Account
	b.Queue(insertMovement, m.ID, tenantID, in.Kind, m.AccountID, m.Amount, m.Currency, m.Reference, m.JournalID, m.CreatedAt)
	queueEntries(b, tenantID, p.Lines)
	b.Queue(updateBooks, tenantID, a.ID, a.Balances.Available, a.Balances.Held, a.Balances.Incoming, a.Version)
	return outbox.Stage(b, outbox.Message{
		ID: domain.NewID(domain.PrefixEvent, now), TenantID: tenantID, Type: in.Kind + ".created",
		AggregateType: in.Kind, AggregateID: m.ID, Sequence: 1, Data: m, CreatedAt: now,
	})
}

// queueEntries inserts the lines of one journal with a single statement.
func queueEntries(b *pgx.Batch, tenantID string, lines []domain.LedgerEntry) {
	ids, accts, books, amounts := make([]string, len(lines)), make([]string, len(lines)), make([]string, len(lines)), make([]int64, len(lines))
	for i, l := range lines {
		ids[i], accts[i], books[i], amounts[i] = l.ID, l.AccountID, l.Book, l.Amount
	}
	b.Queue(insertEntries, ids, tenantID, lines[0].JournalID, accts, books, amounts, lines[0].Currency, lines[0].CreatedAt)
}

type movementRow struct {
	ID        string    `db:"id"`
	Kind      string    `db:"kind"`
	AccountID string    `db:"account_id"`
	Amount    int64     `db:"amount"`
	Currency  string    `db:"currency"`
	Reference *string   `db:"reference"`
	JournalID string    `db:"journal_id"`
	CreatedAt time.Time `db:"created_at"`
}

const selectMovement = `
SELECT id, kind, account_id, amount, currency, reference, journal_id, created_at
FROM movements WHERE tenant_id = $1 AND kind = $2 AND id = $3`

// GetMovement returns the tenant's deposit or withdrawal id.
func (s *Store) GetMovement(ctx context.Context, tenantID, kind, id string) (domain.Movement, error) {
	if !domain.ValidID(domain.MovementPrefix(kind), id) {
		return domain.Movement{}, domain.NotFound(kind, id)
	}
	rows, _ := s.opt.Read.Query(ctx, selectMovement, tenantID, kind, id)
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[movementRow])
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.Movement{}, domain.NotFound(kind, id)
	}
	if err != nil {
		return domain.Movement{}, public(err)
	}
	return domain.Movement{ID: r.ID, Object: r.Kind, AccountID: r.AccountID, Amount: r.Amount, Currency: r.Currency,
		Reference: r.Reference, JournalID: r.JournalID, CreatedAt: r.CreatedAt.UTC()}, nil
}

type entryRow struct {
	ID        string    `db:"id"`
	JournalID string    `db:"journal_id"`
	AccountID string    `db:"account_id"`
	Book      string    `db:"book"`
	Amount    int64     `db:"amount"`
	Currency  string    `db:"currency"`
	CreatedAt time.Time `db:"created_at"`
}

const listEntries = `
SELECT id, journal_id, account_id, book, amount, currency, created_at FROM ledger_entries
WHERE tenant_id = $1 AND account_id = $2 AND ($3 = '' OR id < $3)
ORDER BY id DESC LIMIT $4`

// ListEntries returns a page of the ledger lines of the tenant's account,
// newest first. Lines are scoped by tenant, so a page with lines proves the
// account is the tenant's; only an empty page needs to ask whether it exists.
func (s *Store) ListEntries(ctx context.Context, tenantID, accountID string, p domain.Page) ([]domain.LedgerEntry, string, error) {
	if !domain.ValidID(domain.PrefixAccount, accountID) {
		return nil, "", domain.NotFound("account", accountID)
	}
	rows, _ := s.opt.Read.Query(ctx, listEntries, tenantID, accountID, p.After, p.Limit+1)
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[entryRow])
	if err != nil {
		return nil, "", public(err)
	}
	if len(rs) == 0 {
		if _, err := s.GetAccount(ctx, tenantID, accountID); err != nil {
			return nil, "", err
		}
	}
	out := make([]domain.LedgerEntry, 0, len(rs))
	for _, r := range rs {
		out = append(out, domain.LedgerEntry{ID: r.ID, Object: "ledger_entry", JournalID: r.JournalID, AccountID: r.AccountID,
			Book: r.Book, Amount: r.Amount, Currency: r.Currency, CreatedAt: r.CreatedAt.UTC()})
	}
	out, next := domain.Paginate(out, p.Limit, func(e domain.LedgerEntry) string { return e.ID })
	return out, next, nil
}
