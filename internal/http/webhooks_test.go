package http_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/safeflow/safeflow"
	apihttp "github.com/safeflow/safeflow/internal/http"
	"github.com/safeflow/safeflow/internal/relay"
	"github.com/safeflow/safeflow/internal/relaytest"
)

func TestWebhookEndpoints(t *testing.T) {
	t.Parallel()
	h := newHarness(t)

	key := newKey()
	body := `{"url":"http://127.0.0.1:9/hook","event_types":["deposit.created","payment.settled","deposit.created"]}`
	created := h.post(t, "/v1/webhook-endpoints", key, body).want(t, http.StatusCreated)
	var e endpoint
	created.decode(t, &e)
	if got := created.header.Get("Location"); got != "/v1/webhook-endpoints/"+e.ID {
		t.Errorf("Location = %q", got)
	}
	if e.Status != "enabled" || strings.Join(e.EventTypes, ",") != "deposit.created,payment.settled" {
		t.Errorf("endpoint = %+v, want enabled with the types once each", e)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(e.Secret, "whsec_"))
	if !strings.HasPrefix(e.Secret, "whsec_") || err != nil || len(raw) != 32 {
		t.Errorf("secret %q is not whsec_ + base64 of 32 bytes", e.Secret)
	}
	replay := h.post(t, "/v1/webhook-endpoints", key, body).want(t, http.StatusCreated)
	if !bytes.Equal(replay.body, created.body) || replay.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay differs: %s", replay.body)
	}
	got := h.get(t, "/v1/webhook-endpoints/"+e.ID).want(t, http.StatusOK)
	if bytes.Contains(got.body, []byte("secret")) || bytes.Contains(got.body, []byte(e.Secret)) {
		t.Errorf("GET shows the secret: %s", got.body)
	}
	all := h.mustEndpoint(t, "https://hooks.example.com/all")
	if len(all.EventTypes) != 0 {
		t.Errorf("event_types of an endpoint for every type = %v, want []", all.EventTypes)
	}
	var list struct {
		Data []endpoint `json:"data"`
	}
	h.get(t, "/v1/webhook-endpoints?limit=1").want(t, http.StatusOK).decode(t, &list)
	if len(list.Data) != 1 || list.Data[0].ID != all.ID || list.Data[0].Secret != "" {
		t.Errorf("first page = %+v, want the newest endpoint without its secret", list.Data)
	}

	for body, field := range map[string]string{
		`{}`:                            "url",
		`{"url":"ftp://example.com/x"}`: "url",
		`{"url":"/relative"}`:           "url",
		`{"url":"https://user:pw@example.com/x"}`:                          "url",
		`{"url":"https://example.com","event_types":["payment.exploded"]}`: "event_types[0]",
	} {
		p := h.post(t, "/v1/webhook-endpoints", newKey(), body).wantProblem(t, http.StatusBadRequest, "invalid_request")
		if len(p.Errors) == 0 || p.Errors[0].Field != field {
			t.Errorf("%s: errors = %+v, want field %s", body, p.Errors, field)
		}
	}

	// Deleting is idempotent in effect: 204, then 404.
	send(t, h.request(t, http.MethodDelete, "/v1/webhook-endpoints/"+all.ID, "")).want(t, http.StatusNoContent)
	send(t, h.request(t, http.MethodDelete, "/v1/webhook-endpoints/"+all.ID, "")).wantProblem(t, http.StatusNotFound, "not_found")
	h.get(t, "/v1/webhook-endpoints/"+all.ID).wantProblem(t, http.StatusNotFound, "not_found")
	h.get(t, "/v1/webhook-endpoints/nope").wantProblem(t, http.StatusNotFound, "not_found")
}

// TestWebhookPrivateDestinationsRefused runs the API as in production
// (WEBHOOK_ALLOW_PRIVATE=false): loopback, private, link-local and
// multicast destinations are refused, and the refusal is not stored.
func TestWebhookPrivateDestinationsRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	srv := httptest.NewServer(apihttp.NewHandler(apihttp.Config{
		Store: h.store, Logger: zerolog.New(os.Stderr).Level(zerolog.WarnLevel),
		Metrics: apihttp.NewMetrics(prometheus.NewRegistry()), Ready: h.store.Ping, OpenAPI: safeflow.OpenAPI,
	}))
	t.Cleanup(srv.Close)
	prod := &harness{pool: h.pool, store: h.store, url: srv.URL, key: h.key}
	key := newKey()
	for _, url := range []string{"http://127.0.0.1:8080/x", "http://localhost/x", "http://10.1.2.3/x", "http://[::1]/x",
		"http://169.254.169.254/latest/meta-data", "http://192.168.0.10/x", "http://224.0.0.1/x", "http://[::ffff:127.0.0.1]/x"} {
		p := prod.post(t, "/v1/webhook-endpoints", key, `{"url":"`+url+`"}`).wantProblem(t, http.StatusBadRequest, "invalid_request")
		if len(p.Errors) != 1 || p.Errors[0].Field != "url" {
			t.Errorf("%s: errors = %+v, want one on url", url, p.Errors)
		}
	}
	prod.post(t, "/v1/webhook-endpoints", key, `{"url":"https://93.184.215.14/hook"}`).want(t, http.StatusCreated)
	if n := h.count(t, "webhook_endpoints"); n != 1 {
		t.Errorf("%d endpoints, want only the public one", n)
	}
}

func TestWebhookDeliveredSignedAndFiltered(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	all := relaytest.NewReceiver(t, nil)
	deposits := relaytest.NewReceiver(t, nil)
	eAll := h.mustEndpoint(t, all.URL+"/hooks")
	eDep := h.mustEndpoint(t, deposits.URL, "deposit.created")

	// Another tenant: its events never reach acme's endpoints.
	other := &harness{pool: h.pool, store: h.store, url: h.url, key: h.newKey(t, "globex")}
	other.mustAccount(t, "USD")

	h.startRelay(t, nil)
	a := h.mustAccount(t, "EUR")
	h.mustDeposit(t, a.ID, 500)
	h.post(t, "/v1/accounts/"+a.ID+"/withdrawals", newKey(), `{"amount":200}`).want(t, http.StatusCreated)
	// Recorded after the receivers answered, so wait on the records.
	relaytest.Eventually(t, "3 + 1 deliveries", func() bool { return len(h.deliveries(t, "status=delivered")) == 4 })
	if len(all.Got()) != 3 || len(deposits.Got()) != 1 {
		t.Fatalf("receivers got %d and %d requests, want 3 and 1", len(all.Got()), len(deposits.Got()))
	}

	var feed struct {
		Data []json.RawMessage `json:"data"`
	}
	// The feed serves an event once every older transaction of the cluster
	// has ended; other tests run in parallel.
	relaytest.Eventually(t, "the feed's 3 events", func() bool {
		h.get(t, "/v1/events").want(t, http.StatusOK).decode(t, &feed)
		return len(feed.Data) == 3
	})
	byID := map[string]json.RawMessage{}
	for _, ev := range feed.Data {
		var env struct{ ID, Type string }
		json.Unmarshal(ev, &env)
		byID[env.ID] = ev
	}
	now := time.Now().Unix()
	check := func(hits []relaytest.Hit, secret string, wantTypes ...string) {
		t.Helper()
		for i, hit := range hits {
			if !relaytest.VerifySignature(secret, hit) {
				t.Errorf("signature %q does not verify for %s", hit.Signature, hit.ID)
			}
			if ts := atoi(hit.Timestamp); ts < now-300 || ts > now+300 {
				t.Errorf("webhook-timestamp %q is not now", hit.Timestamp)
			}
			if !bytes.Equal(hit.Body, byID[hit.ID]) {
				t.Errorf("body of %s is not the feed's envelope:\n%s\n%s", hit.ID, hit.Body, byID[hit.ID])
			}
			if hit.ContentType != "application/json" {
				t.Errorf("Content-Type %q", hit.ContentType)
			}
			var env struct{ ID, Type string }
			json.Unmarshal(hit.Body, &env)
			if env.ID != hit.ID || env.Type != wantTypes[i] {
				t.Errorf("hit %d: webhook-id %s, envelope %s %s; want type %s", i, hit.ID, env.ID, env.Type, wantTypes[i])
			}
		}
	}
	// One relay sends one event's deliveries in commit order of the claims,
	// but order is not promised; sort by the feed.
	allHits := inFeedOrder(all.Got(), feed.Data)
	check(allHits, eAll.Secret, "account.created", "deposit.created", "withdrawal.created")
	check(deposits.Got(), eDep.Secret, "deposit.created")
	if relaytest.VerifySignature(eDep.Secret, allHits[0]) {
		t.Error("a signature verifies with another endpoint's secret")
	}

	ds := h.deliveries(t, "")
	if len(ds) != 4 {
		t.Fatalf("%d deliveries, want 4", len(ds))
	}
	for _, d := range ds {
		if d.Status != "delivered" || d.Attempts != 1 || d.LastStatusCode == nil || *d.LastStatusCode != 200 ||
			d.DeliveredAt == nil || d.NextAttemptAt != nil || d.LastError != nil {
			t.Errorf("delivery %+v, want delivered at the first attempt", d)
		}
	}
	if got := h.deliveries(t, "endpoint_id="+eDep.ID); len(got) != 1 || got[0].EndpointID != eDep.ID {
		t.Errorf("deliveries of the deposit endpoint = %+v", got)
	}
	if got := other.deliveries(t, ""); len(got) != 0 {
		t.Errorf("another tenant sees deliveries: %+v", got)
	}
	other.get(t, "/v1/webhook-endpoints/"+eAll.ID).wantProblem(t, http.StatusNotFound, "not_found")
	send(t, other.request(t, http.MethodDelete, "/v1/webhook-endpoints/"+eAll.ID, "")).wantProblem(t, http.StatusNotFound, "not_found")
	other.post(t, "/v1/webhook-endpoints/"+eAll.ID+"/replay-dead", newKey(), "").wantProblem(t, http.StatusNotFound, "not_found")
	other.post(t, "/v1/webhook-deliveries/"+ds[0].ID+"/retry", newKey(), "").wantProblem(t, http.StatusNotFound, "not_found")
}

// inFeedOrder sorts hits by the position of their event in the feed.
func inFeedOrder(hits []relaytest.Hit, feed []json.RawMessage) []relaytest.Hit {
	rank := map[string]int{}
	for i, ev := range feed {
		var env struct{ ID string }
		json.Unmarshal(ev, &env)
		rank[env.ID] = i
	}
	slices.SortStableFunc(hits, func(a, b relaytest.Hit) int { return rank[a.ID] - rank[b.ID] })
	return hits
}

func TestWebhookDeadRetryAndReplay(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var broken atomic.Bool
	broken.Store(true)
	rc := relaytest.NewReceiver(t, func(_ relaytest.Hit, w http.ResponseWriter, _ *http.Request) {
		if broken.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("down for maintenance"))
		}
	})
	e := h.mustEndpoint(t, rc.URL)
	h.startRelay(t, func(c *relay.Config) { c.MaxAttempts = 3 })
	a := h.mustAccount(t, "EUR")
	h.mustDeposit(t, a.ID, 100)
	relaytest.Eventually(t, "two dead deliveries", func() bool { return len(h.deliveries(t, "status=dead")) == 2 })
	dead := h.deliveries(t, "status=dead&endpoint_id="+e.ID)
	for _, d := range dead {
		if d.Attempts != 3 || d.LastError == nil || *d.LastError != "HTTP 503: down for maintenance (attempt 3 of 3: no more attempts)" ||
			d.NextAttemptAt != nil || d.DeliveredAt != nil {
			t.Errorf("dead delivery %+v", d)
		}
	}
	if n := len(rc.Got()); n != 6 {
		t.Errorf("%d requests, want 3 per delivery", n)
	}
	broken.Store(false)

	// One delivery by itself.
	var retried delivery
	h.post(t, "/v1/webhook-deliveries/"+dead[1].ID+"/retry", newKey(), "").want(t, http.StatusOK).decode(t, &retried)
	if retried.Status != "pending" || retried.Attempts != 0 || retried.NextAttemptAt == nil {
		t.Errorf("retried = %+v, want pending, due, attempts afresh", retried)
	}
	relaytest.Eventually(t, "the retried one delivered", func() bool { return len(h.deliveries(t, "status=delivered")) == 1 })
	h.post(t, "/v1/webhook-deliveries/"+dead[1].ID+"/retry", newKey(), "").wantProblem(t, http.StatusConflict, "invalid_transition")

	// The rest of the endpoint's dead letters; a replay moves only dead rows.
	key := newKey()
	var rp struct {
		Object     string `json:"object"`
		EndpointID string `json:"endpoint_id"`
		Replayed   int    `json:"replayed"`
	}
	first := h.post(t, "/v1/webhook-endpoints/"+e.ID+"/replay-dead", key, "{}").want(t, http.StatusOK)
	first.decode(t, &rp)
	if rp.Replayed != 1 || rp.EndpointID != e.ID || rp.Object != "webhook_replay" {
		t.Errorf("replay = %+v, want 1 replayed", rp)
	}
	relaytest.Eventually(t, "all delivered", func() bool { return len(h.deliveries(t, "status=delivered")) == 2 })
	again := h.post(t, "/v1/webhook-endpoints/"+e.ID+"/replay-dead", key, "{}").want(t, http.StatusOK)
	if !bytes.Equal(again.body, first.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay under the same key: %s", again.body)
	}
	h.post(t, "/v1/webhook-endpoints/"+e.ID+"/replay-dead", newKey(), "").want(t, http.StatusOK).decode(t, &rp)
	if rp.Replayed != 0 {
		t.Errorf("a second replay moved %d deliveries, want 0", rp.Replayed)
	}
	perID := map[string]int{}
	for _, hit := range rc.Got() {
		perID[hit.ID]++
	}
	if len(perID) != 2 || perID[dead[0].EventID] != 4 || perID[dead[1].EventID] != 4 {
		t.Errorf("requests per webhook-id = %v, want 4 each under the event ids", perID)
	}
	h.post(t, "/v1/webhook-deliveries/del_06gzz4mfp3enfs0ht7mmmgnt14/retry", newKey(), "").wantProblem(t, http.StatusNotFound, "not_found")
	h.post(t, "/v1/webhook-deliveries/nope/retry", newKey(), "").wantProblem(t, http.StatusNotFound, "not_found")
	h.get(t, "/v1/webhook-deliveries?status=lost").wantProblem(t, http.StatusBadRequest, "invalid_request")
	h.get(t, "/v1/webhook-deliveries?endpoint_id=acct_1").wantProblem(t, http.StatusBadRequest, "invalid_request")
}

func TestWebhookGoneDisablesEndpoint(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var gone atomic.Bool
	gone.Store(true)
	rc := relaytest.NewReceiver(t, func(_ relaytest.Hit, w http.ResponseWriter, _ *http.Request) {
		if gone.Load() {
			w.WriteHeader(http.StatusGone)
		}
	})
	e := h.mustEndpoint(t, rc.URL)
	h.startRelay(t, nil)
	a := h.mustAccount(t, "EUR")
	relaytest.Eventually(t, "dead after 410", func() bool { return len(h.deliveries(t, "status=dead")) == 1 })
	var got endpoint
	h.get(t, "/v1/webhook-endpoints/"+e.ID).want(t, http.StatusOK).decode(t, &got)
	if got.Status != "disabled" {
		t.Errorf("endpoint status %q after 410, want disabled", got.Status)
	}
	d := h.deliveries(t, "status=dead")[0]
	if d.Attempts != 1 || *d.LastStatusCode != 410 {
		t.Errorf("delivery %+v, want dead at the first attempt", d)
	}
	h.mustDeposit(t, a.ID, 100) // goes dead unsent
	relaytest.Eventually(t, "both dead", func() bool { return len(h.deliveries(t, "status=dead")) == 2 })
	if n := len(rc.Got()); n != 1 {
		t.Errorf("a disabled endpoint got %d requests, want only the first", n)
	}
	gone.Store(false)
	var rp struct{ Replayed int }
	h.post(t, "/v1/webhook-endpoints/"+e.ID+"/replay-dead", newKey(), "").want(t, http.StatusOK).decode(t, &rp)
	h.get(t, "/v1/webhook-endpoints/"+e.ID).want(t, http.StatusOK).decode(t, &got)
	if rp.Replayed != 2 || got.Status != "enabled" {
		t.Errorf("replayed %d, endpoint %s; want 2, enabled", rp.Replayed, got.Status)
	}
	relaytest.Eventually(t, "both delivered", func() bool { return len(h.deliveries(t, "status=delivered")) == 2 })
}

// TestEndpointReceivesEventsCommittedAfterIt streams deposits while an
// endpoint is created: every deposit requested after the endpoint's 201
// is delivered to it, none answered before its request was sent is.
func TestEndpointReceivesEventsCommittedAfterIt(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	rc := relaytest.NewReceiver(t, nil)
	a := h.mustAccount(t, "EUR")
	type stamp struct {
		id         string
		start, end time.Time
	}
	var mu sync.Mutex
	var stamps []stamp
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				var m movement
				if r := h.post(t, "/v1/accounts/"+a.ID+"/deposits", newKey(), `{"amount":1}`); !r.is(t, http.StatusCreated) || !r.into(t, &m) {
					return
				}
				mu.Lock()
				stamps = append(stamps, stamp{m.ID, start, time.Now()})
				mu.Unlock()
			}
		}()
	}
	time.Sleep(150 * time.Millisecond)
	sent := time.Now()
	e := h.mustEndpoint(t, rc.URL)
	created := time.Now()
	time.Sleep(150 * time.Millisecond)
	close(stop)
	wg.Wait()

	rows, err := h.pool.Query(context.Background(),
		`SELECT e.aggregate_id FROM webhook_deliveries d JOIN events e ON e.id = d.event_id WHERE d.endpoint_id = $1`, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	delivered := map[string]bool{}
	for rows.Next() {
		var id string
		rows.Scan(&id)
		delivered[id] = true
	}
	var before, after int
	for _, s := range stamps {
		switch {
		case s.end.Before(sent):
			before++
			if delivered[s.id] {
				t.Errorf("deposit %s, answered before the endpoint was requested, has a delivery", s.id)
			}
		case s.start.After(created):
			after++
			if !delivered[s.id] {
				t.Errorf("deposit %s, requested after the endpoint existed, has no delivery", s.id)
			}
		}
	}
	if before == 0 || after == 0 {
		t.Fatalf("the stream did not straddle the endpoint's creation (%d before, %d after)", before, after)
	}
	t.Logf("%d deposits before, %d after, %d straddling", before, after, len(stamps)-before-after)
}
