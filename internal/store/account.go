package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/outbox"
)

// guardedOne makes a guarded UPDATE (one that must match exactly the row
// its transaction locked, as it read it) check itself on the server: it
// raises SQLSTATE SF001 unless it changed one row (migrations/00010). The
// check cannot wait for the client: the COMMIT follows in the same round
// trip, and the server skips it only after an error.
// what names the row in the error; it is written into the SQL, so it is
// a constant without quotes.
func guardedOne(update, what string) string {
	return "WITH changed AS (" + update + " RETURNING 1) SELECT safeflow_expect_one(count(*), '" + what + "') FROM changed"
}

const accountColumns = `id, tenant_id, currency, name, metadata, available, held, incoming, version, created_at`

type accountRow struct {
	ID        string            `db:"id"`
	TenantID  string            `db:"tenant_id"`
	Currency  string            `db:"currency"`
	Name      *string           `db:"name"`
	Metadata  map[string]string `db:"metadata"`
	Available int64             `db:"available"`
	Held      int64             `db:"held"`
	Incoming  int64             `db:"incoming"`
	Version   int64             `db:"version"`
	CreatedAt time.Time         `db:"created_at"`
}

func (r accountRow) account() domain.Account {
	md := r.Metadata
	if md == nil {
		md = map[string]string{}
	}
	return domain.Account{
		ID: r.ID, Object: "account", TenantID: r.TenantID, Currency: r.Currency, Name: r.Name, Metadata: md,
		Balances: domain.Balances{Available: r.Available, Held: r.Held, Incoming: r.Incoming},
		Version:  r.Version, CreatedAt: r.CreatedAt.UTC(),
	}
}

const insertAccount = `
INSERT INTO accounts (id, tenant_id, kind, currency, name, metadata, available, held, incoming, version, created_at)
VALUES ($1, $2, 'customer', $3, $4, $5, 0, 0, 0, 1, $6)`

// The system account of a currency is created with the tenant's first
// account in it; ON CONFLICT makes concurrent first accounts agree on one.
const ensureSystemAccount = `
INSERT INTO accounts (id, tenant_id, kind, currency, name, created_at)
VALUES ($1, $2, 'system', $3, 'external', $4)
ON CONFLICT (tenant_id, currency) WHERE kind = 'system' DO NOTHING`

// CreateAccount opens a customer account and stages account.created.
func (s *Store) CreateAccount(ctx context.Context, req domain.Request[domain.Account], in domain.NewAccount) (domain.Response, error) {
	return safeFlow(ctx, s, req, step[domain.Account]{decide: func(ctx context.Context, tx pgx.Tx) (domain.Account, *pgx.Batch, error) {
		now := s.now()
		a := in.Open(req.TenantID, now)
		b := &pgx.Batch{}
		if _, ok := s.systemIDs.Load(req.TenantID + "/" + a.Currency); !ok {
			b.Queue(ensureSystemAccount, domain.NewID(domain.PrefixAccount, now), req.TenantID, a.Currency, now)
		}
		b.Queue(insertAccount, a.ID, a.TenantID, a.Currency, a.Name, a.Metadata, a.CreatedAt)
		if err := outbox.Stage(b, outbox.Message{
			ID: domain.NewID(domain.PrefixEvent, now), TenantID: req.TenantID, Type: "account.created",
			AggregateType: "account", AggregateID: a.ID, Sequence: a.Version, Data: a, CreatedAt: now,
		}); err != nil {
			return domain.Account{}, nil, err
		}
		return a, b, nil
	}})
}

const selectAccount = `SELECT ` + accountColumns + ` FROM accounts WHERE tenant_id = $1 AND id = $2 AND kind = 'customer'`

// GetAccount returns the tenant's customer account id.
func (s *Store) GetAccount(ctx context.Context, tenantID, id string) (domain.Account, error) {
	a, err := getAccount(ctx, s.opt.Read, tenantID, id, selectAccount)
	return a, public(err)
}

// lockAccounts locks the tenant's customer accounts ($3, an array of ids)
// FOR UPDATE in ascending id order (the sort runs below the row locking,
// so rows are locked in the order they are returned), when the transaction
// claimed its key ($1 the tenant, $2 the key: see ifClaimed). Ids that are
// not the tenant's customer accounts are simply absent from the result.
// shareAccounts takes the weakest lock instead, FOR KEY SHARE: the account
// is only referred to (a payment's payee, at its creation); it stays
// there, and its currency and kind never change.
const (
	readAccounts = `SELECT ` + accountColumns + ` FROM accounts
WHERE tenant_id = $1 AND id = ANY($3) AND kind = 'customer'` + ifClaimed + `
ORDER BY id`
	lockAccounts  = readAccounts + ` FOR UPDATE`
	shareAccounts = readAccounts + ` FOR KEY SHARE`
)

// accountSet is what a queued read of accounts found, by id.
type accountSet struct{ rows []accountRow }

// queueAccounts queues on b the guarded read (query: lockAccounts or
// shareAccounts) of the tenant's accounts ids, for req's transaction; ids
// that cannot exist are left out (they may not even be UTF-8).
func queueAccounts(b *pgx.Batch, req domain.Idempotency, query string, ids ...string) *accountSet {
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		if domain.ValidID(domain.PrefixAccount, id) {
			valid = append(valid, id)
		}
	}
	set := &accountSet{}
	queueRows(b, &set.rows, query, req.TenantID, req.Key, valid)
	return set
}

// into adds the accounts read to m (made if nil) and returns it.
func (set *accountSet) into(m map[string]domain.Account) map[string]domain.Account {
	if m == nil {
		m = make(map[string]domain.Account, len(set.rows))
	}
	for _, r := range set.rows {
		m[r.ID] = r.account()
	}
	return m
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func getAccount(ctx context.Context, q querier, tenantID, id, query string) (domain.Account, error) {
	r, err := findOne[accountRow](ctx, q, query, "account", domain.PrefixAccount, tenantID, id)
	if err != nil {
		return domain.Account{}, err
	}
	return r.account(), nil
}

const listAccounts = `SELECT ` + accountColumns + ` FROM accounts
WHERE tenant_id = $1 AND kind = 'customer' AND ($2 = '' OR id < $2)
ORDER BY id DESC LIMIT $3`

// ListAccounts returns a page of the tenant's accounts, newest first, and
// the id to continue after ("" when this is the last page).
func (s *Store) ListAccounts(ctx context.Context, tenantID string, p domain.Page) ([]domain.Account, string, error) {
	rows, _ := s.opt.Read.Query(ctx, listAccounts, tenantID, p.After, p.Limit+1)
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[accountRow])
	if err != nil {
		return nil, "", public(err)
	}
	out := make([]domain.Account, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.account())
	}
	out, next := domain.Paginate(out, p.Limit, func(a domain.Account) string { return a.ID })
	return out, next, nil
}
