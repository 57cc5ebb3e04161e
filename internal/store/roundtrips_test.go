package store_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/store"
	"github.com/safeflow/safeflow/internal/testdb"
)

// roundTrips counts the messages a pool's connections send that wait for
// an answer: each query or exec (BEGIN and COMMIT included) and each batch,
// however many statements it pipelines.
type roundTrips struct{ n atomic.Int64 }

func (c *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (c *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (c *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (c *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// The round trips each safe flow makes to PostgreSQL when nothing waits,
// counted, so that the number cannot creep back up. Two for every first
// request: BEGIN with the key's claim, the read of its record and the
// step's locking reads (one pipelined batch); then the savepoint, the
// writes, the stored answer and the COMMIT (another). A replay: the first
// batch, then ROLLBACK (pgxpool discards a connection released inside a
// transaction, so the ROLLBACK cannot be left for later).
func TestRoundTripsPerRequest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := testdb.New(t)
	counter := &roundTrips{}
	st := store.New(tracedPool(t, base, counter), store.Options{})
	// Opening the accounts warms up what is cached per process (the system
	// account's id comes with the first deposit below) and per connection.
	tenant, accounts := tenantWithAccounts(t, st, 2)
	a, b := accounts[0], accounts[1]
	if _, err := st.Move(ctx, testdb.Request(tenant, "warm", "warm", movementID), domain.NewMovement{Kind: domain.KindDeposit, AccountID: a.ID, Amount: 1000}); err != nil {
		t.Fatal(err)
	}
	count := func(name string, want int64, run func() (domain.Response, error)) domain.Response {
		t.Helper()
		before := counter.n.Load()
		res, err := run()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := counter.n.Load() - before; got > want {
			t.Errorf("%s: %d round trips, want at most %d", name, got, want)
		} else {
			t.Logf("%s: %d round trips", name, got)
		}
		return res
	}
	paymentID := func(p domain.Payment) string { return p.ID }
	count("create an account", 2, func() (domain.Response, error) {
		return st.CreateAccount(ctx, testdb.Request(tenant, "acct-c", "acct-c", accountID), domain.NewAccount{Currency: "USD"})
	})
	count("deposit", 2, func() (domain.Response, error) {
		return st.Move(ctx, testdb.Request(tenant, "dep", "dep", movementID), domain.NewMovement{Kind: domain.KindDeposit, AccountID: a.ID, Amount: 5})
	})
	count("deposit replayed", 2, func() (domain.Response, error) {
		return st.Move(ctx, testdb.Request(tenant, "dep", "dep", movementID), domain.NewMovement{Kind: domain.KindDeposit, AccountID: a.ID, Amount: 5})
	})
	count("withdrawal", 2, func() (domain.Response, error) {
		return st.Move(ctx, testdb.Request(tenant, "wd", "wd", movementID), domain.NewMovement{Kind: domain.KindWithdrawal, AccountID: a.ID, Amount: 5})
	})
	res := count("payment create", 2, func() (domain.Response, error) {
		return st.CreatePayment(ctx, testdb.Request(tenant, "pay", "pay", paymentID),
			domain.NewPayment{PayerAccountID: a.ID, PayeeAccountID: b.ID, Amount: 10, Currency: "USD"})
	})
	var p domain.Payment
	_ = json.Unmarshal(res.Body, &p)
	transition := func(key string) domain.Request[domain.Payment] { return transitionRequest(tenant, key, key) }
	count("payment confirm", 2, func() (domain.Response, error) {
		return st.TransitionPayment(ctx, transition("conf"), p.ID, domain.ActionConfirm, domain.Precondition{})
	})
	count("payment settle", 2, func() (domain.Response, error) {
		return st.TransitionPayment(ctx, transition("settle"), p.ID, domain.ActionSettle, domain.Precondition{})
	})
	count("payment refund", 2, func() (domain.Response, error) {
		return st.TransitionPayment(ctx, transition("refund"), p.ID, domain.ActionRefund, domain.Precondition{})
	})
	count("webhook endpoint", 2, func() (domain.Response, error) {
		return st.CreateWebhookEndpoint(ctx, testdb.Request(tenant, "we", "we", func(e domain.WebhookEndpoint) string { return e.ID }),
			domain.NewWebhookEndpoint{URL: "https://hooks.example.com/x"})
	})
	testdb.CheckInvariants(t, base)
}
