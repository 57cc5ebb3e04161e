package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/safeflow/safeflow/internal/testdb"
)

// api listen against a running server: it takes over the endpoint an
// earlier run left on its address (with a new secret), prints one line per
// event it verified (and the body with --print-json), refuses a forged
// delivery, and deletes its endpoint when stopped.
func TestListenReceivesVerifiesAndCleansUp(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	vars := map[string]string{"DATABASE_URL": pool.Config().ConnString(), "HTTP_ADDR": freeAddr(t), "LOG_LEVEL": "error", "WEBHOOK_ALLOW_PRIVATE": "true"}
	var out strings.Builder
	if code := run(context.Background(), []string{"apikey", "create", "--tenant", "acme"}, env(vars), &out, io.Discard); code != 0 {
		t.Fatal("apikey create failed")
	}
	key := strings.TrimSpace(out.String())
	sctx, stopServer := context.WithCancel(context.Background())
	served := make(chan int, 1)
	go func() { served <- run(sctx, []string{"serve"}, env(vars), io.Discard, io.Discard) }()
	defer func() { stopServer(); <-served }()
	base := "http://" + vars["HTTP_ADDR"]
	waitReady(t, base)
	call := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "k-"+method+path+body)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	// An endpoint a crashed run left on the listener's address.
	addr := freeAddr(t)
	if status, body := call("POST", "/v1/webhook-endpoints", `{"url":"http://`+addr+`/webhooks"}`); status != http.StatusCreated {
		t.Fatalf("create the leftover endpoint: %d %s", status, body)
	}

	lctx, stopListen := context.WithCancel(context.Background())
	var printed syncBuffer
	listened := make(chan int, 1)
	go func() {
		listened <- run(lctx, []string{"listen", "--api", base, "--addr", addr, "--print-json"}, env(map[string]string{"SAFEFLOW_KEY": key}), &printed, &printed)
	}()
	waitFor := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(printed.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("api listen never printed %q:\n%s", what, printed.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("listening on http://" + addr + "/webhooks as endpoint we_")
	if status, body := call("POST", "/v1/accounts", `{"currency":"USD"}`); status != http.StatusCreated {
		t.Fatalf("create account: %d %s", status, body)
	}
	waitFor("account.created")
	waitFor(`"aggregate_type": "account"`) // --print-json
	var endpoints string
	_, endpoints = call("GET", "/v1/webhook-endpoints", "")
	if strings.Count(endpoints, `"id":"we_`) != 1 {
		t.Errorf("endpoints while listening: %s; want the one taken over", endpoints)
	}

	// A delivery nobody signed is refused.
	req, _ := http.NewRequest("POST", "http://"+addr+"/webhooks", strings.NewReader(`{"type":"payment.settled"}`))
	req.Header.Set("webhook-id", "evt_forged")
	req.Header.Set("webhook-timestamp", "1")
	req.Header.Set("webhook-signature", "v1,AAAA")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("a forged delivery: %d, want 400", res.StatusCode)
	}
	waitFor("REFUSED")

	stopListen()
	if code := <-listened; code != 0 {
		t.Errorf("api listen exited %d after Ctrl-C, want 0:\n%s", code, printed.String())
	}
	waitFor("deleted endpoint we_")
	if _, endpoints = call("GET", "/v1/webhook-endpoints", ""); strings.Contains(endpoints, `"id":"we_`) {
		t.Errorf("endpoints after api listen stopped: %s; want none", endpoints)
	}
	if code := run(context.Background(), []string{"listen", "--api", base}, env(map[string]string{}), io.Discard, io.Discard); code != 2 {
		t.Errorf("api listen without a key: exit %d, want 2", code)
	}
}
