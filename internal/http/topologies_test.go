package http_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	apihttp "github.com/safeflow/safeflow/internal/http"
	"github.com/safeflow/safeflow/internal/relay"
	"github.com/safeflow/safeflow/internal/relaytest"
	"github.com/safeflow/safeflow/internal/store"
	"github.com/safeflow/safeflow/internal/testdb"
)

// The main scenarios through a real PgBouncer 1.18 in transaction mode, in
// front of a cluster of the test's own, configured as api serve does with
// DATABASE_POOL_MODE=transaction: no startup parameters, timeouts set per
// transaction, unnamed statements with cached descriptions, the relay
// polling. A lock held past lock_timeout still ends in a 503, and
// PgBouncer going away is a 503, never a 500.
func TestThroughPgBouncerInTransactionMode(t *testing.T) {
	t.Parallel()
	c := testdb.StartCluster(t, nil)
	c.Migrate()
	direct := c.Pool(10)
	bouncer := testdb.StartPgBouncer(t, c)
	pooled := testdb.PooledPool(t, bouncer.URL, 10)
	h := startHarness(t, direct, pooled, func(_ *apihttp.Config, o *store.Options) { o.PerTransactionTimeouts = true })

	// Accounts (metadata is a map encoded as jsonb), deposits, withdrawals.
	var a account
	h.post(t, "/v1/accounts", newKey(), `{"currency":"USD","name":"main","metadata":{"team":"payments"}}`).want(t, http.StatusCreated).decode(t, &a)
	if a.Metadata["team"] != "payments" {
		t.Errorf("account metadata %v", a.Metadata)
	}
	b := h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 1000)
	h.post(t, "/v1/accounts/"+a.ID+"/withdrawals", newKey(), `{"amount":100}`).want(t, http.StatusCreated)
	h.post(t, "/v1/accounts/"+a.ID+"/withdrawals", newKey(), `{"amount":100000}`).wantProblem(t, http.StatusUnprocessableEntity, "insufficient_funds")
	h.get(t, "/v1/accounts/"+a.ID+"/entries").want(t, http.StatusOK)

	// Payments with If-Match, and a batch.
	p := h.mustPayment(t, a.ID, b.ID, 300)
	h.transition(t, p.ID, "confirm", "confirm-pgb", "If-Match", `"2"`).wantProblem(t, http.StatusPreconditionFailed, "precondition_failed")
	h.transition(t, p.ID, "confirm", "confirm-pgb", "If-Match", `"1"`).want(t, http.StatusOK)
	h.mustTransition(t, p.ID, "settle")
	var batch struct{ Data []struct{ Status int } }
	items := `{"items":[{"payer_account_id":"` + a.ID + `","payee_account_id":"` + b.ID + `","amount":10,"currency":"USD"},` +
		`{"payer_account_id":"` + a.ID + `","payee_account_id":"` + b.ID + `","amount":1000000,"currency":"USD"}]}`
	h.post(t, "/v1/payments/batch", newKey(), items).want(t, http.StatusOK).decode(t, &batch)
	if len(batch.Data) != 2 || batch.Data[0].Status != 201 || batch.Data[1].Status != 422 {
		t.Errorf("batch = %+v, want 201 and 422", batch.Data)
	}
	h.get(t, "/v1/payments?status=settled").want(t, http.StatusOK)

	// Webhooks, delivered by a relay through the pooler (polling: LISTEN
	// needs a session), and the feed.
	rc := relaytest.NewReceiver(t, nil)
	h.mustEndpoint(t, rc.URL)
	h.mustDeposit(t, b.ID, 5)
	relaytest.StartRelay(t, pooled, func(c *relay.Config) { c.PollOnly = true })
	relaytest.Eventually(t, "the deposit's event delivered through the pooler", func() bool { return len(rc.Got()) == 1 })
	if n := len(h.walk(t, "", 100, h.count(t, "events"))); n != h.count(t, "events") {
		t.Errorf("the feed served %d of %d events", n, h.count(t, "events"))
	}

	// The timeouts hold per transaction: a row locked for 10 s makes a
	// deposit fail with 503 long before, retried on lock_timeout.
	tx, err := direct.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(context.Background(), `SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE`, b.ID); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	h.post(t, "/v1/accounts/"+b.ID+"/deposits", newKey(), `{"amount":1}`).wantProblem(t, http.StatusServiceUnavailable, "service_unavailable")
	took := time.Since(start)
	_ = tx.Rollback(context.Background())
	if took > 8*time.Second || h.retries(t, "lock_timeout") < 1 {
		t.Errorf("with the row held, the deposit answered 503 after %v and %d lock_timeout retries; want lock_timeout (1 s) to hold", took, h.retries(t, "lock_timeout"))
	}
	t.Logf("a row held 10 s: 503 after %v (%d tries of lock_timeout 1 s)", took.Round(10*time.Millisecond), h.retries(t, "lock_timeout")+1)

	// PgBouncer goes away: a 503, not a 500.
	bouncer.Stop()
	time.Sleep(200 * time.Millisecond)
	r := h.post(t, "/v1/accounts/"+a.ID+"/deposits", newKey(), `{"amount":1}`)
	if r.status != http.StatusServiceUnavailable {
		t.Errorf("with PgBouncer gone: %d %s, want 503", r.status, r.body)
	}
	var got struct{ Code string }
	_ = json.Unmarshal(r.body, &got)
	t.Logf("with PgBouncer gone: %d %s", r.status, got.Code)
}

// With a read replica (DATABASE_READ_URL), single resources and lists are
// read from it: with its replay paused, a deposit applied on the primary is
// not yet visible there. The safe flow, the idempotency lookup and the
// event feed stay on the primary and see it at once.
func TestReadsFromAReplica(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary := testdb.StartCluster(t, nil)
	primary.Migrate()
	replica := testdb.StartStandby(t, primary, "replica")
	direct, read := primary.Pool(10), replica.Pool(4)
	h := startHarness(t, direct, direct, func(_ *apihttp.Config, o *store.Options) { o.Read = read })
	var inRecovery bool
	if err := read.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil || !inRecovery {
		t.Fatalf("the read pool is not on a standby (%v)", err)
	}

	a := h.mustAccount(t, "USD")
	relaytest.Eventually(t, "the account replicated", func() bool {
		return send(t, h.request(t, http.MethodGet, "/v1/accounts/"+a.ID, "")).status == http.StatusOK
	})
	if _, err := read.Exec(ctx, `SELECT pg_wal_replay_pause()`); err != nil {
		t.Fatal(err)
	}
	h.post(t, "/v1/accounts/"+a.ID+"/deposits", "replicated-later", `{"amount":50}`).want(t, http.StatusCreated)
	if av, _, _ := h.balances(t, a.ID); av != 0 {
		t.Errorf("with the replica's replay paused, GET shows %d: it was not served by the replica", av)
	}
	var k struct{ Status string }
	h.get(t, "/v1/idempotency-keys/replicated-later").want(t, http.StatusOK).decode(t, &k)
	if k.Status != "completed" {
		t.Errorf("the idempotency lookup (on the primary) says %q", k.Status)
	}
	if n, want := len(h.walk(t, "", 100, h.count(t, "events"))), h.count(t, "events"); n != want {
		t.Errorf("the feed (on the primary) served %d of %d events", n, want)
	}
	if _, err := read.Exec(ctx, `SELECT pg_wal_replay_resume()`); err != nil {
		t.Fatal(err)
	}
	relaytest.Eventually(t, "the deposit visible on the replica", func() bool { av, _, _ := h.balances(t, a.ID); return av == 50 })
}

// Failover: a primary with a synchronous standby, the API on a multi-host
// URL with target_session_attrs=read-write. Writers keep depositing, each
// retrying its request under the same key until it is acknowledged; the
// primary is killed and the standby promoted. No request sees a 500, the
// API answers again within seconds without a restart, and every
// acknowledged deposit is on the new primary exactly once.
func TestFailoverToASynchronousStandby(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary := testdb.StartCluster(t, nil)
	primary.Migrate()
	standby := testdb.StartStandby(t, primary, "standby")
	pp := primary.Pool(2)
	if _, err := pp.Exec(ctx, `ALTER SYSTEM SET synchronous_standby_names = 'standby'`); err != nil {
		t.Fatal(err)
	}
	if _, err := pp.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
		t.Fatal(err)
	}
	relaytest.Eventually(t, "the standby synchronous", func() bool {
		var n int
		_ = pp.QueryRow(ctx, `SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'`).Scan(&n)
		return n == 1
	})
	multi := "postgres://postgres@127.0.0.1:" + itoa(int64(primary.Port)) + ",127.0.0.1:" + itoa(int64(standby.Port)) +
		"/postgres?sslmode=disable&target_session_attrs=read-write&connect_timeout=2"
	h := startHarness(t, testdb.PoolOn(t, multi, 4), testdb.PoolOn(t, multi, 10))

	const writers = 4
	accounts := make([]string, writers)
	for i := range accounts {
		accounts[i] = h.mustAccount(t, "USD").ID
	}
	type ack struct{ account, key string }
	acks := make(chan ack, 10000)
	stop := make(chan struct{})
	var killedAt, backAt time.Time
	var unavailable atomic.Int64 // 503s (and 409s) answered meanwhile, each then retried under its key
	back := make(chan time.Time, writers)
	done := make(chan struct{}, writers)
	for w := range writers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := "w" + itoa(int64(w)) + "-" + itoa(int64(i))
				for deadline := time.Now().Add(60 * time.Second); ; {
					r := h.post(t, "/v1/accounts/"+accounts[w]+"/deposits", key, `{"amount":1}`)
					if r.status == http.StatusCreated {
						acks <- ack{accounts[w], key}
						select {
						case back <- time.Now():
						default:
						}
						break
					}
					if r.status >= 500 && r.status != http.StatusServiceUnavailable || r.status < 500 && r.status != http.StatusConflict {
						t.Errorf("deposit %s answered %d: %s", key, r.status, r.body)
						return
					}
					if time.Now().After(deadline) {
						t.Errorf("deposit %s never acknowledged", key)
						return
					}
					unavailable.Add(1)
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(time.Second)
	killedAt = time.Now()
	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	for len(back) > 0 {
		<-back
	}
	time.Sleep(300 * time.Millisecond)
	if err := standby.Promote(); err != nil {
		t.Fatal(err)
	}
	select {
	case backAt = <-back:
	case <-time.After(30 * time.Second):
		t.Fatal("no deposit acknowledged within 30 s of the failover")
	}
	time.Sleep(time.Second)
	close(stop)
	for range writers {
		<-done
	}
	close(acks)
	perAccount := map[string]int64{}
	var keys []string
	for a := range acks {
		perAccount[a.account]++
		keys = append(keys, a.key)
	}
	for _, id := range accounts {
		if av, _, _ := h.balances(t, id); av != perAccount[id] {
			t.Errorf("account %s: balance %d on the new primary, %d deposits acknowledged", id, av, perAccount[id])
		}
	}
	var stored int
	if err := h.pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys WHERE key = ANY ($1) AND status_code = 201`, keys).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != len(keys) {
		t.Errorf("%d of %d acknowledged keys are stored on the new primary", stored, len(keys))
	}
	var promoted bool
	if err := h.pool.QueryRow(ctx, `SELECT NOT pg_is_in_recovery() AND inet_server_port() = $1`, standby.Port).Scan(&promoted); err != nil || !promoted {
		t.Errorf("the API's database is not the promoted standby (%v)", err)
	}
	t.Logf("%d deposits acknowledged, %d answers 503 or 409 retried under the same key; the first acknowledged after the kill came %v after it",
		len(keys), unavailable.Load(), backAt.Sub(killedAt).Round(time.Millisecond))
}
