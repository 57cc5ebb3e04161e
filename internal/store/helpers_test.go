package store_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/store"
	"github.com/safeflow/safeflow/internal/testdb"
)

// tracedPool is a pool like base whose connections report to tracer.
func tracedPool(t *testing.T, base *pgxpool.Pool, tracer pgx.QueryTracer) *pgxpool.Pool {
	t.Helper()
	cfg := base.Config()
	cfg.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// tenantWithAccounts gives st a tenant "acme" with n USD accounts, opened
// under the keys acct-0, acct-1, …
func tenantWithAccounts(t *testing.T, st *store.Store, n int) (string, []domain.Account) {
	t.Helper()
	ctx := context.Background()
	secret, err := st.CreateAPIKey(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	tenant, err := st.Authenticate(ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	accounts := make([]domain.Account, n)
	for i := range accounts {
		key := "acct-" + string(rune('0'+i))
		res, err := st.CreateAccount(ctx, testdb.Request(tenant, key, key, accountID), domain.NewAccount{Currency: "USD"})
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(res.Body, &accounts[i]); err != nil {
			t.Fatal(err)
		}
	}
	return tenant, accounts
}

// transitionRequest is testdb.Request for a payment's transition, which
// answers 200 without a Location (a 201 with one is a creation to the
// invariants).
func transitionRequest(tenant, key, fp string) domain.Request[domain.Payment] {
	req := testdb.Request(tenant, key, fp, func(p domain.Payment) string { return p.ID })
	render := req.Render
	req.Render = func(p domain.Payment) (domain.Response, error) {
		r, err := render(p)
		r.Status, r.Location = 200, ""
		return r, err
	}
	return req
}

// oneAccount gives a test a database of its own, a store on it and the
// tenant of tenantWithAccounts with one account.
func oneAccount(t *testing.T) (*pgxpool.Pool, *store.Store, string, domain.Account) {
	t.Helper()
	pool := testdb.New(t)
	st := store.New(pool, store.Options{})
	tenant, accounts := tenantWithAccounts(t, st, 1)
	return pool, st, tenant, accounts[0]
}
