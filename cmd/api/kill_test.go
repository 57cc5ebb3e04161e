package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/safeflow/safeflow/internal/testdb"
)

// asAPI makes the test binary run as the api binary (see TestMain).
const asAPI = "SAFEFLOW_TEST_RUN_AS_API"

// startAPI starts `api serve` as a process of its own with vars; the test
// kills it with SIGKILL when it ends, if it still runs.
func startAPI(t *testing.T, vars map[string]string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve")
	cmd.Env = append(os.Environ(), asAPI+"=1")
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr syncBuffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
	})
	waitReady(t, "http://"+vars["HTTP_ADDR"])
	return cmd
}

// The api process is killed with SIGKILL while 16 clients deposit into one
// account, so that its requests are in coalesced groups (each one
// transaction for many requests). Nothing may be half-applied: after a
// restart, every request retried under its key is applied exactly once
// (acknowledged ones replay their answer), the balance is the number of
// keys, and the §6 invariants hold.
func TestKilledMidGroupAppliesEachRequestOnce(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	dbURL := pool.Config().ConnString()
	var out bytes.Buffer
	if code := run(context.Background(), []string{"apikey", "create", "--tenant", "acme"}, env(map[string]string{"DATABASE_URL": dbURL}), &out, io.Discard); code != 0 {
		t.Fatalf("apikey create: exit %d", code)
	}
	key := strings.TrimSpace(out.String())
	vars := map[string]string{"DATABASE_URL": dbURL, "HTTP_ADDR": freeAddr(t), "LOG_LEVEL": "error", "RELAY_ENABLED": "false"}
	api := startAPI(t, vars)
	base := "http://" + vars["HTTP_ADDR"]
	client := &http.Client{Timeout: 10 * time.Second}
	post := func(path, idemKey, body string) (int, string, bool, error) {
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", idemKey)
		res, err := client.Do(req)
		if err != nil {
			return 0, "", false, err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b), res.Header.Get("Idempotent-Replayed") == "true", nil
	}
	status, body, _, err := post("/v1/accounts", "acct", `{"currency":"USD"}`)
	if err != nil || status != http.StatusCreated {
		t.Fatalf("create account: %d %s %v", status, body, err)
	}
	acct := body[strings.Index(body, `"id":"`)+6:]
	acct = acct[:strings.Index(acct, `"`)]
	deposits := "/v1/accounts/" + acct + "/deposits"

	var mu sync.Mutex
	acked := map[string]string{} // key → the 201 body its client saw
	var sent []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("dep-%d-%d", c, i)
				mu.Lock()
				sent = append(sent, k)
				mu.Unlock()
				status, body, _, err := post(deposits, k, `{"amount":1}`)
				if err != nil {
					return // the server is gone
				}
				if status == http.StatusCreated {
					mu.Lock()
					acked[k] = body
					mu.Unlock()
				}
			}
		})
	}
	// Kill it once groups have formed, in the middle of the load.
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := client.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if strings.Contains(string(b), "safeflow_coalesced_group_size_count") && !strings.Contains(string(b), "safeflow_coalesced_group_size_count 0") && n > 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no coalesced group after 10 s (%d deposits acknowledged)", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := api.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_, _ = api.Process.Wait()
	close(stop)
	wg.Wait()

	// Restarted, every key is sent again: each answers 201, a replay of
	// the same body if its client had seen one.
	startAPI(t, vars)
	var fresh int
	for _, k := range sent {
		status, body, replayed, err := post(deposits, k, `{"amount":1}`)
		if err != nil || status != http.StatusCreated {
			t.Fatalf("%s after the restart: %d %s %v", k, status, body, err)
		}
		if first, ok := acked[k]; ok && (!replayed || body != first) {
			t.Errorf("%s was acknowledged before the kill, then answered %s (replayed %v); want a replay of %s", k, body, replayed, first)
		}
		if !replayed {
			fresh++
		}
	}
	var available, movements int64
	if err := pool.QueryRow(context.Background(), `SELECT (SELECT available FROM accounts WHERE id = $1), (SELECT count(*) FROM movements)`, acct).
		Scan(&available, &movements); err != nil {
		t.Fatal(err)
	}
	if available != int64(len(sent)) || movements != int64(len(sent)) {
		t.Errorf("balance %d from %d movements after %d keys; want each key applied exactly once", available, movements, len(sent))
	}
	t.Logf("%d keys: %d acknowledged before the kill, %d applied only on retry", len(sent), len(acked), fresh)
	testdb.CheckInvariants(t, pool)
}
