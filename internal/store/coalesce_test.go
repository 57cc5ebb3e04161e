package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/faultproxy"
	"github.com/safeflow/safeflow/internal/promtest"
	"github.com/safeflow/safeflow/internal/store"
	"github.com/safeflow/safeflow/internal/testdb"
)

// A storm into one account with Options.Coalesce, through two stores (two
// API processes) on one database: affordable and unaffordable withdrawals
// and deposits, one key sent ten times, one key sent with two bodies. Requests run together in groups; each answer is
// the one it would have had alone in some order: every 201 applied once,
// every refusal stored and nothing of it written, the balance what the
// answers add up to.
func TestCoalescedStormOnOneAccount(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	reg := prometheus.NewRegistry()
	st := store.New(pool, store.Options{Coalesce: true, Metrics: store.NewMetrics(reg)})
	tenant, accounts := tenantWithAccounts(t, st, 1)
	a := accounts[0]
	// A second process on the same database: each coalesces its own.
	other := store.New(pool, store.Options{Coalesce: true, Metrics: store.NewMetrics(prometheus.NewRegistry())})
	var turn atomic.Int64
	move := func(key, fp, kind string, amount int64) (domain.Response, error) {
		s := st
		if turn.Add(1)%2 == 0 {
			s = other
		}
		return s.Move(ctx, testdb.Request(tenant, key, fp, movementID), domain.NewMovement{Kind: kind, AccountID: a.ID, Amount: amount})
	}
	if r, err := move("fund", "fund", domain.KindDeposit, 1000); err != nil || r.Status != http.StatusCreated {
		t.Fatalf("fund: %+v %v", r, err)
	}

	type sent struct {
		key, kind string
		amount    int64
		resp      domain.Response
		err       error
	}
	var reqs []*sent
	for i := range 50 {
		reqs = append(reqs, &sent{key: fmt.Sprintf("dep-%d", i), kind: domain.KindDeposit, amount: 10})
	}
	for i := range 100 {
		reqs = append(reqs, &sent{key: fmt.Sprintf("wd-%d", i), kind: domain.KindWithdrawal, amount: 20})
	}
	for range 10 {
		reqs = append(reqs, &sent{key: "same", kind: domain.KindDeposit, amount: 7})
	}
	reqs = append(reqs, &sent{key: "reused", kind: domain.KindDeposit, amount: 3}, &sent{key: "reused", kind: domain.KindDeposit, amount: 4})
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, r := range reqs {
		wg.Go(func() {
			<-start
			r.resp, r.err = move(r.key, fmt.Sprintf("%s/%d", r.key, r.amount), r.kind, r.amount)
		})
	}
	close(start)
	wg.Wait()

	want := int64(1000)
	applied := map[string]bool{}
	var refusedWithdrawals, reusedRefusals int
	for _, r := range reqs {
		switch {
		case r.err != nil:
			var de *domain.Error
			if ok := asDomain(r.err, &de); ok && de.Code == domain.CodeIdempotencyKeyReused && r.key == "reused" {
				reusedRefusals++
				continue
			}
			t.Errorf("%s: %v", r.key, r.err)
		case r.resp.Status == http.StatusCreated:
			if !r.resp.Replayed {
				if applied[r.key] {
					t.Errorf("%s applied twice", r.key)
				}
				applied[r.key] = true
				if r.kind == domain.KindDeposit {
					want += r.amount
				} else {
					want -= r.amount
				}
			}
		case r.resp.Status == http.StatusUnprocessableEntity && r.kind == domain.KindWithdrawal:
			refusedWithdrawals++
		default:
			t.Errorf("%s: %d %s", r.key, r.resp.Status, r.resp.Body)
		}
	}
	var got int64
	if err := pool.QueryRow(ctx, `SELECT available FROM accounts WHERE id = $1`, a.ID).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("balance %d, the answers add up to %d", got, want)
	}
	if !applied["same"] || !applied["reused"] || reusedRefusals != 1 {
		t.Errorf("the key sent ten times applied %v; the reused key applied %v with %d refusals (want 1)", applied["same"], applied["reused"], reusedRefusals)
	}
	if refusedWithdrawals == 0 {
		t.Error("no withdrawal was refused: the storm did not test refusals")
	}
	groups := promtest.Value(t, reg, "safeflow_coalesced_group_size")
	if groups == 0 {
		t.Error("no group was coalesced: the test did not test coalescing")
	}
	t.Logf("%d applied, %d withdrawals refused, %v groups", len(applied), refusedWithdrawals, groups)
	testdb.CheckInvariants(t, pool)
}

func asDomain(err error, de **domain.Error) bool { return errors.As(err, de) }

// A group whose server is lost mid-group, the connection dropped before
// its COMMIT reaches the server: nothing of the group is applied, each of
// its requests is told so (503, nothing applied), and each is applied once
// when retried under its key.
func TestCoalescedGroupLosesItsCommit(t *testing.T) {
	t.Parallel()
	for _, fault := range []faultproxy.CommitFault{faultproxy.LoseCommit, faultproxy.LoseReply} {
		ctx := context.Background()
		pool := testdb.New(t)
		proxy, proxied := faultproxy.Around(t, pool)
		st := store.New(proxied, store.Options{Coalesce: true})
		tenant, accounts := tenantWithAccounts(t, st, 1)
		a := accounts[0]
		deposit := func(key string) (domain.Response, error) {
			return st.Move(ctx, testdb.Request(tenant, key, key, movementID), domain.NewMovement{Kind: domain.KindDeposit, AccountID: a.ID, Amount: 1})
		}
		// Hold the account so that the first deposit waits alone and the
		// next nine queue behind it into one group.
		hold, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hold.Exec(ctx, `SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE`, a.ID); err != nil {
			t.Fatal(err)
		}
		type answer struct {
			resp domain.Response
			err  error
		}
		answers := make([]answer, 10)
		var wg sync.WaitGroup
		wg.Go(func() { answers[0].resp, answers[0].err = deposit("k0") })
		time.Sleep(100 * time.Millisecond)
		for i := 1; i < 10; i++ {
			wg.Go(func() { answers[i].resp, answers[i].err = deposit(fmt.Sprintf("k%d", i)) })
		}
		time.Sleep(200 * time.Millisecond)
		fired := proxy.FailCommit(2, fault, 0) // the first is the lone deposit's, the second the group's
		_ = hold.Rollback(ctx)
		wg.Wait()
		<-fired
		var balance int64
		if err := pool.QueryRow(ctx, `SELECT available FROM accounts WHERE id = $1`, a.ID).Scan(&balance); err != nil {
			t.Fatal(err)
		}
		for i := 1; i < 10; i++ {
			r := answers[i]
			var de *domain.Error
			switch fault {
			case faultproxy.LoseCommit:
				if !asDomain(r.err, &de) || de.Kind != domain.KindUnavailable {
					t.Errorf("lost COMMIT, k%d: %+v %v; want 503 nothing applied", i, r.resp, r.err)
				}
			case faultproxy.LoseReply:
				if r.err != nil || r.resp.Status != http.StatusCreated || r.resp.Replayed {
					t.Errorf("lost reply, k%d: %+v %v; want its own 201", i, r.resp, r.err)
				}
			}
		}
		want := map[faultproxy.CommitFault]int64{faultproxy.LoseCommit: 1, faultproxy.LoseReply: 10}[fault]
		if balance != want {
			t.Errorf("fault %d: balance %d, want %d", fault, balance, want)
		}
		for i := range 10 { // retried under the same keys: each applied once in all
			if r, err := deposit(fmt.Sprintf("k%d", i)); err != nil || r.Status != http.StatusCreated {
				t.Errorf("retry k%d: %+v %v", i, r, err)
			}
		}
		if err := pool.QueryRow(ctx, `SELECT available FROM accounts WHERE id = $1`, a.ID).Scan(&balance); err != nil || balance != 10 {
			t.Errorf("after the retries: balance %d (%v), want 10", balance, err)
		}
		testdb.CheckInvariants(t, pool)
	}
}

// Many payments to one merchant, through two stores (two API processes)
// with Options.Coalesce: the transitions that move the payee's books run in
// groups on it. The storm mixes confirms, the same confirm sent again,
// a second confirm of a payment under another key, a key reused with
// another body and settles racing their confirm. Each payment is confirmed
// exactly once, every answer is one it could have had alone, and the
// payee's books and the invariants agree.
func TestCoalescedTransitionsToOnePayee(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	reg, otherReg := prometheus.NewRegistry(), prometheus.NewRegistry()
	st := store.New(pool, store.Options{Coalesce: true, Metrics: store.NewMetrics(reg)})
	other := store.New(pool, store.Options{Coalesce: true, Metrics: store.NewMetrics(otherReg)})
	const n = 30
	tenant, accounts := tenantWithAccounts(t, st, n+1)
	payee := accounts[n]
	stores := func(i int) *store.Store { return []*store.Store{st, other}[i%2] }
	payments := make([]domain.Payment, n)
	for i := range n {
		key := fmt.Sprintf("fund-%d", i)
		if _, err := st.Move(ctx, testdb.Request(tenant, key, key, movementID), domain.NewMovement{Kind: domain.KindDeposit, AccountID: accounts[i].ID, Amount: 100}); err != nil {
			t.Fatal(err)
		}
		key = fmt.Sprintf("pay-%d", i)
		res, err := stores(i).CreatePayment(ctx, testdb.Request(tenant, key, key, func(p domain.Payment) string { return p.ID }),
			domain.NewPayment{PayerAccountID: accounts[i].ID, PayeeAccountID: payee.ID, Amount: 10, Currency: "USD"})
		if err != nil || res.Status != http.StatusCreated {
			t.Fatalf("payment %d: %+v %v", i, res, err)
		}
		if err := json.Unmarshal(res.Body, &payments[i]); err != nil {
			t.Fatal(err)
		}
	}

	type sent struct {
		i           int // the payment
		key, fp     string
		action      string
		resp        domain.Response
		err         error
		storeOfTurn int
	}
	var reqs []*sent
	for i := range n {
		reqs = append(reqs, &sent{i: i, key: fmt.Sprintf("conf-%d", i), fp: "confirm", action: domain.ActionConfirm, storeOfTurn: i})
	}
	for i := range 10 { // the same request again, three times
		for k := range 3 {
			reqs = append(reqs, &sent{i: i, key: fmt.Sprintf("conf-%d", i), fp: "confirm", action: domain.ActionConfirm, storeOfTurn: i + k})
		}
	}
	for i := 10; i < 15; i++ { // the payment confirmed again under another key
		reqs = append(reqs, &sent{i: i, key: fmt.Sprintf("conf2-%d", i), fp: "confirm", action: domain.ActionConfirm, storeOfTurn: i})
	}
	reqs = append(reqs, &sent{i: 15, key: "conf-15", fp: "another body", action: domain.ActionConfirm, storeOfTurn: 15})
	for i := 20; i < n; i++ { // settles racing their confirm
		reqs = append(reqs, &sent{i: i, key: fmt.Sprintf("settle-%d", i), fp: "settle", action: domain.ActionSettle, storeOfTurn: i + 1})
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, r := range reqs {
		wg.Go(func() {
			<-start
			r.resp, r.err = stores(r.storeOfTurn).TransitionPayment(ctx, transitionRequest(tenant, r.key, r.fp), payments[r.i].ID, r.action, domain.Precondition{})
		})
	}
	close(start)
	wg.Wait()

	first := map[string]domain.Response{} // key → its first fresh answer
	for _, r := range reqs {
		var de *domain.Error
		switch {
		case r.err != nil && asDomain(r.err, &de) && de.Code == domain.CodeIdempotencyKeyReused && r.key == "conf-15":
		case r.err != nil:
			t.Errorf("%s: %v", r.key, r.err)
		case r.resp.Status == http.StatusOK || r.resp.Status == http.StatusUnprocessableEntity && string(r.resp.Body) == domain.CodeInvalidTransition:
			if f, ok := first[r.key]; ok && (string(f.Body) != string(r.resp.Body) || !r.resp.Replayed && !f.Replayed) {
				t.Errorf("%s answered %s fresh twice or differently: %s", r.key, f.Body, r.resp.Body)
			}
			if _, ok := first[r.key]; !ok || !r.resp.Replayed {
				first[r.key] = r.resp
			}
		default:
			t.Errorf("%s: %d %s", r.key, r.resp.Status, r.resp.Body)
		}
	}
	// A second wave on the confirmed payments: settles and refunds, which
	// move the payee's books too, all at once.
	wave := map[int]string{}
	for i := range 20 {
		wave[i] = domain.ActionSettle
	}
	for i := 20; i < 25; i++ {
		wave[i] = domain.ActionRefund
	}
	for i, action := range wave {
		wg.Go(func() {
			key := fmt.Sprintf("%s-2-%d", action, i)
			res, err := stores(i).TransitionPayment(ctx, transitionRequest(tenant, key, key), payments[i].ID, action, domain.Precondition{})
			if err != nil || res.Status != http.StatusOK && string(res.Body) != domain.CodeInvalidTransition {
				t.Errorf("%s of payment %d: %d %s, %v", action, i, res.Status, res.Body, err)
			}
		})
	}
	wg.Wait()
	var confirms, settled, confirmedOnly, refunded int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM payment_transitions WHERE action = 'confirm'),
		(SELECT count(*) FROM payments WHERE status = 'settled'), (SELECT count(*) FROM payments WHERE status = 'confirmed'),
		(SELECT count(*) FROM payments WHERE status = 'refunded')`).
		Scan(&confirms, &settled, &confirmedOnly, &refunded); err != nil {
		t.Fatal(err)
	}
	if confirms != n || settled+confirmedOnly+refunded != n || settled < 20 || refunded != 5 {
		t.Errorf("%d confirms applied; %d settled, %d confirmed and %d refunded of %d payments; want every payment confirmed exactly once, 20 or more settled, 5 refunded",
			confirms, settled, confirmedOnly, refunded, n)
	}
	var incoming, available int64
	if err := pool.QueryRow(ctx, `SELECT incoming, available FROM accounts WHERE id = $1`, payee.ID).Scan(&incoming, &available); err != nil {
		t.Fatal(err)
	}
	if incoming != int64(10*confirmedOnly) || available != int64(10*settled) {
		t.Errorf("payee incoming %d, available %d; want %d and %d", incoming, available, 10*confirmedOnly, 10*settled)
	}
	groups := promtest.Value(t, reg, "safeflow_coalesced_group_size") + promtest.Value(t, otherReg, "safeflow_coalesced_group_size")
	if groups == 0 {
		t.Error("no group was coalesced: the test did not test coalescing")
	}
	t.Logf("%d settled, %d confirmed, %d refunded, %v groups", settled, confirmedOnly, refunded, groups)
	testdb.CheckInvariants(t, pool)
}
