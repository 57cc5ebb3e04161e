package http_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/safeflow/safeflow"
	apihttp "github.com/safeflow/safeflow/internal/http"
	"github.com/safeflow/safeflow/internal/store"
)

// parallel runs fn(i) for i in [0, n) at once and waits for all. fn runs on
// goroutines of its own: it may mark the test failed, not stop it.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			fn(i)
		}()
	}
	close(start)
	wg.Wait()
}

func TestConcurrentRequestsWithOneKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a := h.mustAccount(t, "USD")

	const n = 50
	res := make([]response, n)
	parallel(n, func(i int) {
		res[i] = send(t, h.request(t, "POST", "/v1/accounts/"+a.ID+"/deposits", `{"amount":250}`, "Idempotency-Key", "one-key"))
	})
	wantOneEffect(t, res)
	if got := h.count(t, "movements"); got != 1 {
		t.Errorf("deposits = %d, want 1", got)
	}
	if av, _, _ := h.balances(t, a.ID); av != 250 {
		t.Errorf("available = %d, want 250", av)
	}
}

// wantOneEffect checks the answers to copies of one request under one key:
// all 201 with the same body and Location, exactly one of them fresh.
func wantOneEffect(t *testing.T, res []response) {
	t.Helper()
	fresh := 0
	for i, r := range res {
		if r.status != http.StatusCreated || !bytes.Equal(r.body, res[0].body) || r.header.Get("Location") != res[0].header.Get("Location") {
			t.Fatalf("answer %d = %d %s, want 201 %s", i, r.status, r.body, res[0].body)
		}
		if r.header.Get("Idempotent-Replayed") == "false" {
			fresh++
		}
	}
	if fresh != 1 {
		t.Errorf("%d fresh answers, want exactly 1 (the rest replayed)", fresh)
	}
}

func TestWithdrawalsRaceForTheLastFunds(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a := h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 1000)

	const n, amount = 100, 30 // 1000/30: 33 affordable
	res := make([]response, n)
	parallel(n, func(i int) {
		res[i] = h.post(t, "/v1/accounts/"+a.ID+"/withdrawals", newKey(), `{"amount":30}`)
	})
	ok, refused := 0, 0
	for _, r := range res {
		switch {
		case r.status == http.StatusCreated:
			ok++
		case r.status == http.StatusUnprocessableEntity && r.problem(t).Code == "insufficient_funds":
			refused++
		default:
			t.Errorf("unexpected answer %d %s", r.status, r.body)
		}
	}
	if ok != 1000/amount || refused != n-1000/amount {
		t.Errorf("%d withdrawals succeeded and %d were refused, want %d and %d", ok, refused, 1000/amount, n-1000/amount)
	}
	if av, _, _ := h.balances(t, a.ID); av != 1000-int64(ok)*amount {
		t.Errorf("available = %d, want %d", av, 1000-int64(ok)*amount)
	}
}

func TestKeyHeldByARunningRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()

	// Another request holds the key: its claim is inserted and not committed.
	tx, err := h.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO idempotency_keys (tenant_id, key, fingerprint, expires_at)
		SELECT tenant_id, 'busy', '\x00', now() + interval '1 hour' FROM api_keys LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res := h.post(t, "/v1/accounts", "busy", `{"currency":"USD"}`)
	waited := time.Since(start)
	res.wantProblem(t, http.StatusConflict, "idempotency_key_in_use")
	if res.header.Get("Retry-After") == "" {
		t.Error("409 idempotency_key_in_use without Retry-After")
	}
	if waited < 900*time.Millisecond {
		t.Errorf("answered after %v; a duplicate should wait about 1 s for the running request", waited)
	}

	// The running request fails (rolls back): the key is free and this request runs.
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	h.post(t, "/v1/accounts", "busy", `{"currency":"USD"}`).want(t, http.StatusCreated)
}

func TestSystemAccountIsNotALockHotSpot(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	accts := []account{h.mustAccount(t, "USD"), h.mustAccount(t, "USD"), h.mustAccount(t, "USD")}
	ctx := context.Background()

	// Hold the lock on the system account for the whole test: deposits and
	// withdrawals must not need it.
	tx, err := h.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT id FROM accounts WHERE kind = 'system' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	// Touching that row would wait for lock_timeout and be retried, and end
	// in a 503 after the last try.
	parallel(len(accts), func(i int) {
		if h.post(t, "/v1/accounts/"+accts[i].ID+"/deposits", newKey(), `{"amount":100}`).is(t, http.StatusCreated) {
			h.post(t, "/v1/accounts/"+accts[i].ID+"/withdrawals", newKey(), `{"amount":40}`).is(t, http.StatusCreated)
		}
	})
	if n := h.retries(t, ""); n != 0 {
		t.Errorf("%d transactions hit lock_timeout and were retried, want none", n)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLockTimeoutOnABusyAccountIsRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a := h.mustAccount(t, "USD")
	ctx := context.Background()

	// Hold the account's row lock longer than lock_timeout, then let go.
	tx, err := h.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT id FROM accounts WHERE id = $1 FOR UPDATE`, a.ID); err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(1500 * time.Millisecond)
		_ = tx.Rollback(ctx)
	}()
	h.post(t, "/v1/accounts/"+a.ID+"/deposits", newKey(), `{"amount":70}`).want(t, http.StatusCreated)
	<-released
	if n := h.retries(t, ""); n < 1 {
		t.Errorf("retries = %d, want at least 1 (the first attempt hit lock_timeout)", n)
	}
	if av, _, _ := h.balances(t, a.ID); av != 70 {
		t.Errorf("available = %d, want 70", av)
	}
}

func TestDatabaseUnreachable(t *testing.T) {
	t.Parallel()
	pc, err := store.PoolConfig("postgres://root@127.0.0.1:1/none?sslmode=disable&connect_timeout=2", 2, false)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	st := store.New(pool, store.Options{})
	srv := httptest.NewServer(apihttp.NewHandler(apihttp.Config{
		Store: st, Logger: zerolog.Nop(), Metrics: apihttp.NewMetrics(prometheus.NewRegistry()), Ready: st.Ping, OpenAPI: safeflow.OpenAPI,
	}))
	defer srv.Close()
	h := &harness{url: srv.URL, key: "sk_whatever"}

	res := h.post(t, "/v1/accounts", "k", `{"currency":"USD"}`)
	res.wantProblem(t, http.StatusServiceUnavailable, "service_unavailable")
	if res.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	h.get(t, "/readyz").want(t, http.StatusServiceUnavailable)
	h.get(t, "/healthz").want(t, http.StatusOK)
}
