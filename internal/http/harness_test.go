package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/safeflow/safeflow"
	apihttp "github.com/safeflow/safeflow/internal/http"
	"github.com/safeflow/safeflow/internal/promtest"
	"github.com/safeflow/safeflow/internal/store"
	"github.com/safeflow/safeflow/internal/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// contract routes requests to the operations of openapi.yaml, against which
// every response a test receives is validated.
var contract = func() routers.Router {
	doc, err := openapi3.NewLoader().LoadFromData(safeflow.OpenAPI)
	if err != nil {
		panic("openapi.yaml: " + err.Error())
	}
	if err := doc.Validate(context.Background()); err != nil {
		panic("openapi.yaml is not valid: " + err.Error())
	}
	doc.Servers = nil // match any host: the tests run on httptest's
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		panic(err)
	}
	return r
}()

// harness is one API on its own database, with an API key for tenant "acme".
type harness struct {
	pool  *pgxpool.Pool
	store *store.Store
	url   string
	key   string
	// storeMetrics has the store's metrics, for the retries it counts;
	// apiMetrics the API's.
	storeMetrics, apiMetrics *prometheus.Registry
	// purged names what the scenario purged by design, for the invariants.
	purged []testdb.Purged
}

// newHarness starts the API on a new database. When the test ends, the
// invariants of product.md §6 are checked on that database.
func newHarness(t *testing.T) *harness {
	t.Helper()
	pool := testdb.New(t)
	return startHarness(t, pool, pool)
}

// startHarness starts the API with its store on storePool, a pool on the
// database of pool (which the test's own queries use), configured further
// by configure.
func startHarness(t *testing.T, pool, storePool *pgxpool.Pool, configure ...func(*apihttp.Config, *store.Options)) *harness {
	t.Helper()
	h := &harness{pool: pool, storeMetrics: prometheus.NewRegistry(), apiMetrics: prometheus.NewRegistry()}
	opt := store.Options{Metrics: store.NewMetrics(h.storeMetrics)}
	cfg := apihttp.Config{
		Logger:  zerolog.New(os.Stderr).Level(zerolog.WarnLevel), // shown when a test fails
		Metrics: apihttp.NewMetrics(h.apiMetrics), OpenAPI: safeflow.OpenAPI,
		WebhookAllowPrivate: true, // receivers are httptest servers on 127.0.0.1
		// Scenarios race hundreds of requests on purpose; admission_test.go
		// drives the limits themselves.
		Admission: apihttp.Admission{MaxInFlight: 512, MaxQueued: 4096, QueueWait: time.Minute},
	}
	for _, c := range configure {
		c(&cfg, &opt)
	}
	h.store = store.New(storePool, opt)
	cfg.Store, cfg.Ready = h.store, h.store.Ping
	srv := httptest.NewServer(apihttp.NewHandler(cfg))
	t.Cleanup(srv.Close)
	h.url = srv.URL
	h.key = h.newKey(t, "acme")
	t.Cleanup(func() { testdb.CheckInvariants(t, h.pool, h.purged...) })
	return h
}

// retries is how many transactions the store ran again, for reason
// (serialization_failure, deadlock, lock_timeout) or for any when "".
func (h *harness) retries(t *testing.T, reason string) int {
	t.Helper()
	if reason == "" {
		return int(promtest.Sum(t, h.storeMetrics, "safeflow_tx_retries_total"))
	}
	return int(promtest.Value(t, h.storeMetrics, "safeflow_tx_retries_total", "reason", reason))
}

func (h *harness) newKey(t *testing.T, tenant string) string {
	t.Helper()
	k, err := h.store.CreateAPIKey(context.Background(), tenant)
	if err != nil {
		t.Fatalf("create API key: %v", err)
	}
	return k
}

// response is what a client saw.
type response struct {
	status int
	header http.Header
	body   []byte
}

// problem is the decoded problem+json of a response.
type problem struct {
	Type     string `json:"type"`
	Status   int    `json:"status"`
	Code     string `json:"code"`
	Detail   string `json:"detail"`
	Instance string `json:"instance"`
	Errors   []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
}

// decode is into that stops the test when it fails: for the test's goroutine.
func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if !r.into(t, v) {
		t.FailNow()
	}
}

func (r response) problem(t *testing.T) problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json; body %s", ct, r.body)
	}
	var p problem
	r.decode(t, &p)
	return p
}

// wantProblem fails t unless r is a problem with this status and code.
func (r response) wantProblem(t *testing.T, status int, code string) problem {
	t.Helper()
	r.want(t, status)
	p := r.problem(t)
	if p.Code != code || p.Status != status {
		t.Fatalf("problem code/status = %s/%d, want %s/%d; body %s", p.Code, p.Status, code, status, r.body)
	}
	return p
}

// is reports whether r has status, and marks the test failed if not. Unlike
// want it does not stop the test, so goroutines may call it.
func (r response) is(t *testing.T, status int) bool {
	t.Helper()
	if r.status != status {
		t.Errorf("status = %d, want %d; body %s", r.status, status, r.body)
		return false
	}
	return true
}

// into decodes r's body into v, and marks the test failed if it cannot.
// Unlike decode it does not stop the test, so goroutines may call it.
func (r response) into(t *testing.T, v any) bool {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Errorf("decode %s: %v", r.body, err)
		return false
	}
	return true
}

// want is is that stops the test when it fails: for the test's goroutine.
func (r response) want(t *testing.T, status int) response {
	t.Helper()
	if !r.is(t, status) {
		t.FailNow()
	}
	return r
}

// request builds a request to the API; header pairs follow the body.
func (h *harness) request(t *testing.T, method, path, body string, header ...string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.url+path, rd)
	if err != nil {
		panic("a malformed request in a test: " + err.Error()) // not FailNow: goroutines build requests too
	}
	req.Header.Set("Authorization", "Bearer "+h.key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] == "" {
			req.Header.Del(header[i])
			continue
		}
		req.Header.Add(header[i], header[i+1])
	}
	return req
}

// send runs req and validates the response against openapi.yaml. A request
// that gets no answer marks the test failed and returns status 0 with the
// error as its body; send never stops the test, so goroutines may call it.
func send(t *testing.T, req *http.Request) response {
	t.Helper()
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", req.Method, req.URL.Path, err)
		return response{header: http.Header{}, body: []byte(err.Error())}
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil {
		t.Errorf("%s %s: read the answer: %v", req.Method, req.URL.Path, err)
		return response{header: http.Header{}, body: []byte(err.Error())}
	}
	r := response{status: res.StatusCode, header: res.Header, body: got}
	req.Body = io.NopCloser(bytes.NewReader(body))
	checkContract(t, req, r)
	return r
}

// checkContract validates a response against the operation of openapi.yaml
// that the request addressed: status documented, headers and body schema.
func checkContract(t *testing.T, req *http.Request, r response) {
	t.Helper()
	route, params, err := contract.FindRoute(req)
	if err != nil {
		if r.status == http.StatusNotFound || r.status == http.StatusMethodNotAllowed {
			return // an undocumented route, answered as such
		}
		t.Errorf("%s %s is not in openapi.yaml: %v", req.Method, req.URL.Path, err)
		return
	}
	opts := &openapi3filter.Options{IncludeResponseStatus: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts},
		Status:                 r.status, Header: r.header, Options: opts,
	}
	in.SetBodyBytes(r.body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("%s %s → %d does not match openapi.yaml: %v\nbody: %s", req.Method, req.URL.Path, r.status, err, r.body)
	}
}

func (h *harness) get(t *testing.T, path string) response {
	t.Helper()
	return send(t, h.request(t, http.MethodGet, path, ""))
}

// post sends a JSON body under an idempotency key.
func (h *harness) post(t *testing.T, path, key, body string) response {
	t.Helper()
	return send(t, h.request(t, http.MethodPost, path, body, "Idempotency-Key", key))
}

type account struct {
	ID       string            `json:"id"`
	Object   string            `json:"object"`
	Currency string            `json:"currency"`
	Name     *string           `json:"name"`
	Metadata map[string]string `json:"metadata"`
	Balances struct {
		Available int64 `json:"available"`
		Held      int64 `json:"held"`
		Incoming  int64 `json:"incoming"`
	} `json:"balances"`
	Version int64 `json:"version"`
}

type movement struct {
	ID        string  `json:"id"`
	Object    string  `json:"object"`
	AccountID string  `json:"account_id"`
	Amount    int64   `json:"amount"`
	Currency  string  `json:"currency"`
	Reference *string `json:"reference"`
	JournalID string  `json:"journal_id"`
}

// mustAccount opens an account in currency and returns it.
func (h *harness) mustAccount(t *testing.T, currency string) account {
	t.Helper()
	var a account
	h.post(t, "/v1/accounts", newKey(), `{"currency":"`+currency+`"}`).want(t, http.StatusCreated).decode(t, &a)
	return a
}

// mustDeposit deposits amount into the account.
func (h *harness) mustDeposit(t *testing.T, accountID string, amount int64) {
	t.Helper()
	h.post(t, "/v1/accounts/"+accountID+"/deposits", newKey(), `{"amount":`+itoa(amount)+`}`).want(t, http.StatusCreated)
}

func (h *harness) balances(t *testing.T, accountID string) (available, held, incoming int64) {
	t.Helper()
	var a account
	h.get(t, "/v1/accounts/"+accountID).want(t, http.StatusOK).decode(t, &a)
	return a.Balances.Available, a.Balances.Held, a.Balances.Incoming
}

// count returns the number of rows of a table in the harness's database.
func (h *harness) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := h.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

var keySeq atomic.Int64

// newKey returns an idempotency key no other request in this process uses.
func newKey() string { return "key-" + itoa(keySeq.Add(1)) + "-" + itoa(int64(os.Getpid())) }
