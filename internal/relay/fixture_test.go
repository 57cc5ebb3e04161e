package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/store"
	"github.com/safeflow/safeflow/internal/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// fixture is a database with one tenant, written to through the store as
// the API writes to it, so every event a relay delivers belongs to a real
// change. When the test ends, the invariants of product.md §6 are checked.
type fixture struct {
	pool   *pgxpool.Pool
	store  *store.Store
	tenant string
	purged []testdb.Purged // what the scenario purged by design
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{pool: testdb.New(t)}
	f.store = store.New(f.pool, store.Options{})
	secret, err := f.store.CreateAPIKey(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if f.tenant, err = f.store.Authenticate(ctx, secret); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testdb.CheckInvariants(t, f.pool, f.purged...) })
	return f
}

var keys atomic.Int64

// request is a fresh request of the tenant.
func request[T any](f *fixture, id func(T) string) domain.Request[T] {
	k := fmt.Sprintf("k%d", keys.Add(1))
	return testdb.Request(f.tenant, k, k, id)
}

// decoded returns the result of a fresh 201 answer.
func decoded[T any](resp domain.Response, err error) (T, error) {
	var v T
	if err == nil && resp.Status != 201 {
		err = fmt.Errorf("answered %d: %s", resp.Status, resp.Body)
	}
	if err == nil {
		err = json.Unmarshal(resp.Body, &v)
	}
	return v, err
}

// endpoint subscribes url to types (all when none); its secret included.
func (f *fixture) endpoint(t *testing.T, url string, types ...string) domain.WebhookEndpoint {
	t.Helper()
	req := request(f, func(e domain.WebhookEndpoint) string { return e.ID })
	e, err := decoded[domain.WebhookEndpoint](f.store.CreateWebhookEndpoint(context.Background(), req, domain.NewWebhookEndpoint{URL: url, EventTypes: types}))
	if err != nil {
		t.Fatalf("create endpoint: %v", err)
	}
	return e
}

// openAccount opens an account in EUR: one account.created event. Any
// goroutine may call it.
func (f *fixture) openAccount() (domain.Account, error) {
	req := request(f, func(a domain.Account) string { return a.ID })
	return decoded[domain.Account](f.store.CreateAccount(context.Background(), req, domain.NewAccount{Currency: "EUR"}))
}

// makeDeposit deposits amount into the account: one deposit.created event.
// Any goroutine may call it.
func (f *fixture) makeDeposit(accountID string, amount int64) error {
	req := request(f, func(m domain.Movement) string { return m.ID })
	_, err := decoded[domain.Movement](f.store.Move(context.Background(), req,
		domain.NewMovement{Kind: domain.KindDeposit, AccountID: accountID, Amount: amount}))
	return err
}

// account is openAccount for the test's goroutine.
func (f *fixture) account(t *testing.T) domain.Account {
	t.Helper()
	a, err := f.openAccount()
	if err != nil {
		t.Fatalf("open account: %v", err)
	}
	return a
}

// deposit is makeDeposit for the test's goroutine.
func (f *fixture) deposit(t *testing.T, accountID string, amount int64) {
	t.Helper()
	if err := f.makeDeposit(accountID, amount); err != nil {
		t.Fatalf("deposit: %v", err)
	}
}

// deliveries lists every delivery of the tenant that the filter matches,
// as the API lists them.
func (f *fixture) deliveries(t *testing.T, filter domain.DeliveryFilter) []domain.Delivery {
	t.Helper()
	var all []domain.Delivery
	p := domain.Page{Limit: 100}
	for {
		page, next, err := f.store.ListDeliveries(context.Background(), f.tenant, filter, p)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if next == "" {
			return all
		}
		p.After = next
	}
}

func (f *fixture) withStatus(t *testing.T, status string) []domain.Delivery {
	t.Helper()
	return f.deliveries(t, domain.DeliveryFilter{Status: status})
}

// countWhere counts the rows of a query's result.
func (f *fixture) countWhere(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM ("+query+") q", args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
