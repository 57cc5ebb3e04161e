package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/safeflow/safeflow/internal/testdb"
)

func TestMain(m *testing.M) {
	// The test binary doubles as the api binary for tests that must kill
	// a real process (kill_test.go).
	if os.Getenv(asAPI) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
	}
	os.Exit(testdb.Main(m))
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// api with no arguments, help, --help or -h prints the usage on stdout and
// exits 0, with no database configured; the usage names every variable the
// configuration reads.
func TestHelpNeedsNoDatabase(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"help"}, {"--help"}, {"-h"}} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), args, env(map[string]string{}), &stdout, &stderr)
		if code != 0 || !strings.Contains(stdout.String(), "api serve") || stderr.Len() != 0 {
			t.Errorf("api %v: exit %d, stdout %q, stderr %q; want 0 and the usage on stdout", args, code, stdout.String(), stderr.String())
		}
	}
	var read []string
	_, _ = loadConfig(func(k string) string {
		read = append(read, k)
		if k == "DATABASE_URL" {
			return "postgres://x/y"
		}
		return ""
	})
	for _, k := range read {
		if !strings.Contains(usage, "\n  "+k+" ") {
			t.Errorf("the usage does not list %s, which the configuration reads", k)
		}
	}
	if len(read) < 20 {
		t.Errorf("the configuration read only %v", read)
	}
}

func TestBadConfigurationNamesTheVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		vars map[string]string
		name string
	}{
		{map[string]string{}, "DATABASE_URL"},
		{map[string]string{"DATABASE_URL": "postgres://x/y", "IDEMPOTENCY_TTL": "1 day"}, "IDEMPOTENCY_TTL"},
		{map[string]string{"DATABASE_URL": "postgres://x/y", "LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{map[string]string{"DATABASE_URL": "postgres://x/y", "RELAY_ENABLED": "maybe"}, "RELAY_ENABLED"},
		{map[string]string{"DATABASE_URL": "postgres://x/y", "RELAY_MAX_ATTEMPTS": "0"}, "RELAY_MAX_ATTEMPTS"},
		{map[string]string{"DATABASE_URL": "postgres://x/y", "DELIVERY_TIMEOUT": "-1s"}, "DELIVERY_TIMEOUT"},
		{map[string]string{"DATABASE_URL": "postgres://x/y", "WEBHOOK_ALLOW_PRIVATE": "yes please"}, "WEBHOOK_ALLOW_PRIVATE"},
		{map[string]string{"DATABASE_URL": "postgres://x/y", "RELAY_BACKOFF_BASE": "1m", "RELAY_BACKOFF_MAX": "1s"}, "RELAY_BACKOFF_MAX"},
		{map[string]string{"DATABASE_URL": "not a url at all ::"}, "DATABASE_URL"},
		{map[string]string{"DATABASE_URL": "postgres://x/y", "RELAY_POLL_ONLY": "sometimes"}, "RELAY_POLL_ONLY"},
		{map[string]string{"DATABASE_URL": "postgres://x/y", "RETENTION_DEAD": "forever"}, "RETENTION_DEAD"},
		{map[string]string{"DATABASE_URL": "postgres://x/y", "DATABASE_POOL_MODE": "statement"}, "DATABASE_POOL_MODE"},
		{map[string]string{"DATABASE_URL": "postgres://x/y", "HTTP_MAX_IN_FLIGHT": "0"}, "HTTP_MAX_IN_FLIGHT"},
		{map[string]string{"DATABASE_URL": "postgres://x/y", "VERIFY_INTERVAL": "hourly"}, "VERIFY_INTERVAL"},
		{map[string]string{"DATABASE_URL": "postgres://x/y", "COALESCE_HOT_ROWS": "sometimes"}, "COALESCE_HOT_ROWS"},
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), []string{"serve"}, env(tc.vars), &stdout, &stderr)
		msg := stderr.String()
		if code != 2 || !strings.Contains(msg, tc.name) || strings.Count(strings.TrimSpace(msg), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and one line naming %s", tc.vars, code, msg, tc.name)
		}
	}
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"fly"}, env(map[string]string{}), io.Discard, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), `unknown command "fly"`) || !strings.Contains(stderr.String(), "api serve") {
		t.Errorf("unknown command without a database: exit %d, %q; want 2, the command named and the usage", code, stderr.String())
	}
	// Behind a transaction pooler, migrate says which URL it needs.
	stderr.Reset()
	pooled := map[string]string{"DATABASE_URL": "postgres://x/y", "DATABASE_POOL_MODE": "transaction"}
	if code := run(context.Background(), []string{"migrate", "up"}, env(pooled), io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "DATABASE_SESSION_URL") {
		t.Errorf("migrate behind a transaction pooler: exit %d, %q; want 2 naming DATABASE_SESSION_URL", code, stderr.String())
	}
}

func TestBinaryEndToEnd(t *testing.T) {
	t.Parallel()
	// A database that does not exist yet: migrate up creates it.
	name := "safeflow_e2e_" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
	dbURL := testdb.URL(name)
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), testdb.URL("postgres"))
		if err == nil {
			_, _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			conn.Close(context.Background())
		}
	})
	addr := freeAddr(t)
	// The API runs without its relay; `api relay` delivers below.
	vars := map[string]string{"DATABASE_URL": dbURL, "HTTP_ADDR": addr, "LOG_LEVEL": "warn",
		"RELAY_ENABLED": "false", "WEBHOOK_ALLOW_PRIVATE": "true"}
	cmd := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, env(vars), &stdout, &stderr); code != 0 {
			t.Fatalf("api %s: exit %d: %s", strings.Join(args, " "), code, stderr.String())
		}
		return stdout.String()
	}

	cmd("migrate", "up")
	if out := cmd("migrate", "status"); !strings.Contains(out, "applied") || strings.Contains(out, "pending") {
		t.Fatalf("migrate status after up:\n%s", out)
	}
	key := cmd("apikey", "create", "--tenant", "acme")
	if !regexp.MustCompile(`^sk_[A-Za-z0-9_-]{43}\n$`).MatchString(key) {
		t.Fatalf("apikey create printed %q, want only the secret", key)
	}
	key = strings.TrimSpace(key)
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var hashed, clear int
	err = conn.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE hash = sha256(convert_to($1, 'UTF8'))),
		count(*) FILTER (WHERE prefix = $1 OR hash = convert_to($1, 'UTF8')) FROM api_keys`, key).Scan(&hashed, &clear)
	if err != nil || hashed != 1 || clear != 0 {
		t.Errorf("api_keys holds %d rows with the secret's SHA-256 and %d with the secret itself (%v); want 1 and 0", hashed, clear, err)
	}

	ctx, sigterm := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr syncBuffer
	go func() { done <- run(ctx, []string{"serve"}, env(vars), io.Discard, &stderr) }()
	base := "http://" + addr
	waitReady(t, base)

	do := func(method, path, body string) (*http.Response, string) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "e2e-"+path+body)
		res, err := http.DefaultClient.Do(req)
		if err != nil { // not Fatal: a goroutine sends a request too
			t.Errorf("%s %s: %v", method, path, err)
			return &http.Response{Header: http.Header{}}, err.Error()
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	hooks := make(chan string, 10)
	receiver := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		hooks <- r.Header.Get("webhook-id")
	}))
	defer receiver.Close()
	if res, body := do("POST", "/v1/webhook-endpoints", `{"url":"`+receiver.URL+`"}`); res.StatusCode != http.StatusCreated {
		t.Fatalf("create webhook endpoint: %d %s", res.StatusCode, body)
	}
	res, body := do("POST", "/v1/accounts", `{"currency":"USD"}`)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("create account: %d %s", res.StatusCode, body)
	}
	if _, body := do("GET", "/metrics", ""); !strings.Contains(body, "safeflow_webhook_backlog 1") {
		t.Errorf("/metrics of an API without relay does not show the pending delivery")
	}
	// `api relay` alone delivers it, serves its metrics and stops on SIGTERM.
	relayVars := map[string]string{"DATABASE_URL": dbURL, "HTTP_ADDR": freeAddr(t), "LOG_LEVEL": "warn", "WEBHOOK_ALLOW_PRIVATE": "true"}
	rctx, stopRelay := context.WithCancel(context.Background())
	relayDone := make(chan int, 1)
	go func() { relayDone <- run(rctx, []string{"relay"}, env(relayVars), io.Discard, &stderr) }()
	select {
	case id := <-hooks:
		if !strings.HasPrefix(id, "evt_") {
			t.Errorf("webhook-id %q", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("api relay did not deliver the account's event")
	}
	waitStatus(t, "http://"+relayVars["HTTP_ADDR"]+"/healthz")
	// The outcome is recorded once the receiver has answered: poll for it.
	// The relay runs the retention jobs too, the API (without relay) only
	// the idempotency janitor; each runs once at start.
	waitMetrics(t, "http://"+relayVars["HTTP_ADDR"]+"/metrics", `safeflow_webhook_deliveries_total{outcome="delivered"} 1`,
		"safeflow_webhook_backlog 0", `safeflow_job_runs_total{job="retention_delivered",result="ok"} 1`)
	waitMetrics(t, base+"/metrics", `safeflow_job_runs_total{job="idempotency_janitor",result="ok"} 1`)
	if _, body := do("GET", "/metrics", ""); strings.Contains(body, `job="retention_`) {
		t.Errorf("an API without relay runs the relay's retention jobs")
	}
	stopRelay()
	if code := <-relayDone; code != 0 {
		t.Errorf("api relay exited %d after SIGTERM, want 0: %s", code, stderr.String())
	}
	acct := res.Header.Get("Location")
	for path, want := range map[string]string{
		"/healthz":      `"ok"`,
		"/metrics":      `safeflow_tx_retries_total{reason="lock_timeout"} 0`,
		"/openapi.yaml": "openapi: 3.0.3",
	} {
		if res, body := do("GET", path, ""); res.StatusCode != 200 || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d, body without %q", path, res.StatusCode, want)
		}
	}
	if _, body := do("GET", "/metrics", ""); !strings.Contains(body, `safeflow_http_requests_total{code="201",method="POST",route="/v1/accounts"} 1`) {
		t.Errorf("/metrics does not count the account creation by route pattern")
	}

	// SIGTERM while a request is in flight: the request finishes, then the
	// process exits 0. The account's row lock holds the deposit in flight.
	tx, err := conn.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(context.Background(), "SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", strings.TrimPrefix(acct, "/v1/accounts/")); err != nil {
		t.Fatal(err)
	}
	inflight := make(chan int, 1)
	go func() {
		res, _ := do("POST", acct+"/deposits", `{"amount":10}`)
		inflight <- res.StatusCode
	}()
	waitLockWaiter(t, conn)
	sigterm()
	time.Sleep(200 * time.Millisecond) // the server is shutting down while the deposit waits
	if _, err := tx.Exec(context.Background(), "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if got := <-inflight; got != http.StatusCreated {
		t.Errorf("in-flight deposit during shutdown: %d, want 201", got)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("serve exited %d after SIGTERM, want 0: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop after SIGTERM")
	}

	// With the schema behind the binary, /readyz is 503.
	cmd("migrate", "down")
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() { done <- run(ctx, []string{"serve"}, env(vars), io.Discard, io.Discard) }()
	if code := waitStatus(t, base+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the schema rolled back: %d, want 503", code)
	}
	stop()
	<-done
}

// waitMetrics polls url until its metrics show every line of want.
func waitMetrics(t *testing.T, url string, want ...string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		missing := ""
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				missing = w
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not show %s:\n%s", url, missing, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLockWaiter waits until a session of conn's database waits on a lock.
func waitLockWaiter(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
		if err == nil && n > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the in-flight request never reached the database")
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitStatus polls url until the server answers and returns the status.
func waitStatus(t *testing.T, url string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if res, err := http.Get(url); err == nil {
			res.Body.Close()
			return res.StatusCode
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not answer", url)
	return 0
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if waitStatus(t, base+"/readyz") == http.StatusOK {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("/readyz never became 200")
}

// syncBuffer is a bytes.Buffer two goroutines may write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// api healthcheck, the container's probe, needs no database: 0 when the
// server on HTTP_ADDR answers /readyz with 200, 1 otherwise.
func TestHealthcheckProbesReadyz(t *testing.T) {
	t.Parallel()
	var ready atomic.Bool
	ready.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	probe := func(addr string) int {
		return run(context.Background(), []string{"healthcheck"}, env(map[string]string{"HTTP_ADDR": addr}), io.Discard, io.Discard)
	}
	addr := strings.TrimPrefix(srv.URL, "http://")
	if code := probe(addr); code != 0 {
		t.Errorf("ready server: exit %d, want 0", code)
	}
	if code := probe(":" + addr[strings.LastIndex(addr, ":")+1:]); code != 0 {
		t.Errorf("HTTP_ADDR as :port: exit %d, want 0", code)
	}
	ready.Store(false)
	if code := probe(addr); code != 1 {
		t.Errorf("server not ready: exit %d, want 1", code)
	}
	if code := probe(freeAddr(t)); code != 1 {
		t.Errorf("nothing listening: exit %d, want 1", code)
	}
}
