package http_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/safeflow/safeflow/client"
	"github.com/safeflow/safeflow/internal/faultproxy"
)

// The Go client, as a careful caller uses it, against the real server:
// through a database outage and a COMMIT lost on its way, it retries each
// change under its one key until it is applied, exactly once; Lookup then
// tells what became of a key.
func TestTheGoClientRetriesEachChangeToExactlyOnce(t *testing.T) {
	t.Parallel()
	h, proxy := newProxiedHarness(t)
	a := h.mustAccount(t, "USD")
	ctx := context.Background()
	c := client.New(h.url, h.key)
	c.MaxAttempts, c.BackoffBase, c.BackoffMax = 30, 20*time.Millisecond, 200*time.Millisecond
	deposits := "/v1/accounts/" + a.ID + "/deposits"

	// The database is unreachable for a while: the client's tries get 503s
	// until it is back.
	proxy.Cut()
	type result struct {
		res *client.Response
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := c.Post(ctx, deposits, map[string]any{"amount": 10}, nil)
		done <- result{res, err}
	}()
	time.Sleep(800 * time.Millisecond)
	proxy.Restore()
	r := <-done
	if r.err != nil || r.res.Status != http.StatusCreated || r.res.Attempts < 2 {
		t.Fatalf("deposit through an outage: %+v, %v; want a 201 after retries", r.res, r.err)
	}

	// The COMMIT is lost before it reaches the server: the server answers
	// 503 "nothing applied", the client tries again under the same key.
	fired := proxy.FailNextCommit(faultproxy.LoseCommit, 0)
	var dep struct {
		ID     string `json:"id"`
		Amount int64  `json:"amount"`
	}
	res, err := c.Post(ctx, deposits, map[string]any{"amount": 20}, &dep)
	<-fired
	if err != nil || res.Status != http.StatusCreated || res.Attempts != 2 || dep.Amount != 20 {
		t.Fatalf("deposit whose first COMMIT was lost: %+v, %v; want a 201 on the second try", res, err)
	}
	if av, _, _ := h.balances(t, a.ID); av != 30 {
		t.Errorf("balance %d, want 30: each change exactly once", av)
	}

	k, err := c.Lookup(ctx, res.IdempotencyKey)
	if err != nil || k.Status != "completed" || k.ResponseStatus == nil || *k.ResponseStatus != http.StatusCreated {
		t.Errorf("Lookup of the key: %+v, %v; want completed with 201", k, err)
	}
	var p *client.Problem
	if _, err := c.Lookup(ctx, client.NewKey()); !errors.As(err, &p) || p.Code != "not_found" {
		t.Errorf("Lookup of a key never sent: %v; want the problem not_found", err)
	}
	// A refusal is final: not retried.
	if _, err := c.Post(ctx, "/v1/accounts/"+a.ID+"/withdrawals", map[string]any{"amount": 1000}, nil); !errors.As(err, &p) || p.Code != "insufficient_funds" {
		t.Errorf("an unaffordable withdrawal: %v; want the problem insufficient_funds", err)
	}
}
