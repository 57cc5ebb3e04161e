package main

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/store"
	"github.com/safeflow/safeflow/internal/testdb"
)

// api verify finds a corrupted cached balance and a deleted delivery, by
// name and amount; --repair rebuilds both from what they derive from and
// says so; verify then passes, and so do the §6 checks. Meanwhile deposits
// keep flowing: verify blocks no writer.
func TestVerifyFindsAndRepairs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	st := store.New(pool, store.Options{})
	secret, err := st.CreateAPIKey(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	tenant, err := st.Authenticate(ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	req := func() string { n++; return "k" + strings.Repeat("x", n) }
	if _, err := st.CreateWebhookEndpoint(ctx, testdb.Request(tenant, req(), "e", func(e domain.WebhookEndpoint) string { return e.ID }),
		domain.NewWebhookEndpoint{URL: "https://hooks.example.com/x"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // events over a second younger than the endpoint must have a delivery
	account := func() string {
		resp, err := st.CreateAccount(ctx, testdb.Request(tenant, req(), "a", func(a domain.Account) string { return a.ID }), domain.NewAccount{Currency: "EUR"})
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimPrefix(resp.Location, "/v1/x/")
	}
	acct, busy := account(), account()
	deposit := func(accountID, key string) error {
		_, err := st.Move(ctx, testdb.Request(tenant, key, key, func(m domain.Movement) string { return m.ID }),
			domain.NewMovement{Kind: domain.KindDeposit, AccountID: accountID, Amount: 10})
		return err
	}
	if err := deposit(acct, "first"); err != nil {
		t.Fatal(err)
	}

	vars := map[string]string{"DATABASE_URL": pool.Config().ConnString()}
	api := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := run(ctx, args, env(vars), &out, &errOut)
		return code, out.String() + errOut.String()
	}
	if code, out := api("verify"); code != 0 {
		t.Fatalf("verify on a sound database: exit %d\n%s", code, out)
	}

	var event string
	if _, err := pool.Exec(ctx, `UPDATE accounts SET available = available + 5 WHERE id = $1`, acct); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `DELETE FROM webhook_deliveries WHERE id = (SELECT min(id) FROM webhook_deliveries) RETURNING event_id`).Scan(&event); err != nil {
		t.Fatal(err)
	}

	// Writers keep going while verify reads.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var slowest atomic.Int64
	var deposits atomic.Int64
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			if err := deposit(busy, "stream-"+strconv.Itoa(i)); err != nil {
				t.Errorf("a deposit during verify: %v", err)
				return
			}
			if d := int64(time.Since(start)); d > slowest.Load() {
				slowest.Store(d)
			}
			deposits.Add(1)
		}
	})
	code, out := api("verify")
	if code != 1 || !strings.Contains(out, "FAIL 2. cached balances equal the sums of the ledger lines: "+acct+": cached 15/0/0, ledger 10/0/0") ||
		!strings.Contains(out, "FAIL 6. every event has a delivery row") || !strings.Contains(out, event) {
		t.Errorf("verify on the corrupted database: exit %d, want 1 naming %s (cached 15, ledger 10) and event %s:\n%s", code, acct, event, out)
	}
	close(stop)
	wg.Wait()
	if d := time.Duration(slowest.Load()); d > 500*time.Millisecond {
		t.Errorf("a deposit took %v while verify ran", d)
	}
	t.Logf("%d deposits while verify ran, the slowest %v", deposits.Load(), time.Duration(slowest.Load()))

	code, out = api("verify", "--repair")
	if code != 0 || !strings.Contains(out, "repaired "+acct+": cached balances available/held/incoming") ||
		!strings.Contains(out, "repaired "+event+": created its missing delivery") {
		t.Errorf("verify --repair: exit %d, want 0 and both repairs named:\n%s", code, out)
	}
	if code, out := api("verify"); code != 0 || strings.Contains(out, "FAIL") {
		t.Errorf("verify after the repair: exit %d\n%s", code, out)
	}
	testdb.CheckInvariants(t, pool)
}
