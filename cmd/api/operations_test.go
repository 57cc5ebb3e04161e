package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/safeflow/safeflow/internal/testdb"
)

// With every connection of the API's pool busy (two requests held inside
// the database), /healthz, /readyz and /metrics still answer within a
// second: they use a pool of their own. A request past the limits is a
// fast 503. The scrape shows the pool busy and the oldest transaction.
func TestOperationsAnswerWithTheBusinessPoolBusy(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	dbURL := pool.Config().ConnString()
	addr := freeAddr(t)
	vars := map[string]string{"DATABASE_URL": dbURL, "HTTP_ADDR": addr, "LOG_LEVEL": "error",
		"RELAY_ENABLED": "false", "DB_MAX_CONNS": "2"}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"apikey", "create", "--tenant", "acme"}, env(vars), &out, &errOut); code != 0 {
		t.Fatalf("apikey create: %s", errOut.String())
	}
	key := strings.TrimSpace(out.String())
	ctx, sigterm := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve"}, env(vars), io.Discard, io.Discard) }()
	defer func() {
		sigterm()
		<-done
	}()
	base := "http://" + addr
	waitReady(t, base)
	post := func(path, key2, body string) (int, []byte) {
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key2)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("POST %s: %v", path, err)
			return 0, nil
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	var accounts []string
	for i := range 2 {
		code, b := post("/v1/accounts", "acct-"+strconv.Itoa(i), `{"currency":"USD"}`)
		var a struct{ ID string }
		if code != http.StatusCreated || json.Unmarshal(b, &a) != nil {
			t.Fatalf("create account: %d %s", code, b)
		}
		accounts = append(accounts, a.ID)
	}

	g := testdb.HoldAtGate(t, pool, "held-%")
	held := make(chan int, 2)
	for i, id := range accounts {
		go func() {
			code, _ := post("/v1/accounts/"+id+"/deposits", "held-"+strconv.Itoa(i), `{"amount":1}`)
			held <- code
		}()
	}
	g.WaitHeld(t, 2)

	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		start := time.Now()
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if took := time.Since(start); res.StatusCode != http.StatusOK || took > time.Second {
			t.Errorf("GET %s with the pool busy: %d in %v", path, res.StatusCode, took)
		}
		if path == "/metrics" {
			for _, want := range []string{`safeflow_db_pool_acquired_connections{pool="api"} 2`, `safeflow_db_pool_max_connections{pool="api"} 2`,
				"safeflow_db_oldest_transaction_age_seconds ", "safeflow_webhook_backlog ", "safeflow_tx_in_flight 2", `safeflow_http_in_flight 2`,
				`safeflow_invariant_violations{check="1. every ledger journal sums to zero"} 0`} {
				if !strings.Contains(string(body), want) {
					t.Errorf("/metrics does not show %q", want)
				}
			}
		}
	}
	start := time.Now()
	if code, b := post("/v1/accounts/"+accounts[0]+"/deposits", "over", `{"amount":1}`); code != http.StatusServiceUnavailable || time.Since(start) > time.Second {
		t.Errorf("a request past the limits: %d in %v: %s", code, time.Since(start), b)
	}

	g.Open(t)
	for range 2 {
		if code := <-held; code != http.StatusCreated {
			t.Errorf("a held deposit answered %d", code)
		}
	}
	testdb.CheckInvariants(t, pool)
}
