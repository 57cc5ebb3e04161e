package http_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/safeflow/safeflow"
	apihttp "github.com/safeflow/safeflow/internal/http"
	"github.com/safeflow/safeflow/internal/outbox"
	"github.com/safeflow/safeflow/internal/testdb"
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
	all := newReceiver(t, nil)
	deposits := newReceiver(t, nil)
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
	eventually(t, "3 + 1 deliveries", func() bool { return len(h.deliveries(t, "status=delivered")) == 4 })
	if len(all.got()) != 3 || len(deposits.got()) != 1 {
		t.Fatalf("receivers got %d and %d requests, want 3 and 1", len(all.got()), len(deposits.got()))
	}

	var feed struct {
		Data []json.RawMessage `json:"data"`
	}
	// The feed serves an event once every older transaction of the cluster
	// has ended; other tests run in parallel.
	eventually(t, "the feed's 3 events", func() bool {
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
	check := func(rc *receiver, secret string, wantTypes ...string) {
		t.Helper()
		for i, hit := range rc.got() {
			if !verifySignature(secret, hit) {
				t.Errorf("signature %q does not verify for %s", hit.signature, hit.id)
			}
			if ts := atoi(hit.timestamp); ts < now-300 || ts > now+300 {
				t.Errorf("webhook-timestamp %q is not now", hit.timestamp)
			}
			if !bytes.Equal(hit.body, byID[hit.id]) {
				t.Errorf("body of %s is not the feed's envelope:\n%s\n%s", hit.id, hit.body, byID[hit.id])
			}
			if hit.contentType != "application/json" {
				t.Errorf("Content-Type %q", hit.contentType)
			}
			var env struct{ ID, Type string }
			json.Unmarshal(hit.body, &env)
			if env.ID != hit.id || env.Type != wantTypes[i] {
				t.Errorf("hit %d: webhook-id %s, envelope %s %s; want type %s", i, hit.id, env.ID, env.Type, wantTypes[i])
			}
		}
	}
	// One relay sends one event's deliveries in commit order of the claims,
	// but order is not promised; sort by the feed.
	sortHits(all, feed.Data)
	check(all, eAll.Secret, "account.created", "deposit.created", "withdrawal.created")
	check(deposits, eDep.Secret, "deposit.created")
	if verifySignature(eDep.Secret, all.got()[0]) {
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

func sortHits(rc *receiver, feed []json.RawMessage) {
	rank := map[string]int{}
	for i, ev := range feed {
		var env struct{ ID string }
		json.Unmarshal(ev, &env)
		rank[env.ID] = i
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for i := range rc.hits {
		for j := i + 1; j < len(rc.hits); j++ {
			if rank[rc.hits[j].id] < rank[rc.hits[i].id] {
				rc.hits[i], rc.hits[j] = rc.hits[j], rc.hits[i]
			}
		}
	}
}

func TestWebhookRetriedUntilDelivered(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	rc := newReceiver(t, func(hit hit, w http.ResponseWriter, _ *http.Request) {
		switch hit.attempt {
		case 1:
			w.WriteHeader(http.StatusInternalServerError)
		case 2:
			w.Header().Set("Location", "https://elsewhere.example.com/")
			w.WriteHeader(http.StatusFound) // a redirect is a failure, not followed
		case 3:
			time.Sleep(500 * time.Millisecond) // past the delivery timeout
		}
	})
	e := h.mustEndpoint(t, rc.URL)
	relay := h.startRelay(t, func(c *outbox.Config) { c.DeliveryTimeout = 200 * time.Millisecond })
	h.mustAccount(t, "EUR")
	eventually(t, "delivered", func() bool {
		ds := h.deliveries(t, "status=delivered")
		return len(ds) == 1
	})
	d := h.deliveries(t, "endpoint_id="+e.ID)[0]
	if d.Attempts != 4 || *d.LastStatusCode != 200 {
		t.Errorf("delivery %+v, want delivered at attempt 4", d)
	}
	hits := rc.got()
	if len(hits) != 4 {
		t.Fatalf("%d requests, want 4", len(hits))
	}
	for _, hit := range hits {
		if hit.id != d.EventID || !verifySignature(e.Secret, hit) {
			t.Errorf("attempt %d: webhook-id %s (want the event id %s on every attempt), signature valid %v",
				hit.attempt, hit.id, d.EventID, verifySignature(e.Secret, hit))
		}
	}
	for result, want := range map[string]float64{"5xx": 1, "3xx": 1, "timeout": 1, "2xx": 1} {
		if got := relay.metric(t, "safeflow_webhook_attempts_total", "result", result); got != want {
			t.Errorf("attempts{result=%s} = %v, want %v", result, got, want)
		}
	}
	if got := relay.metric(t, "safeflow_webhook_deliveries_total", "outcome", "retry"); got != 3 {
		t.Errorf("deliveries{outcome=retry} = %v, want 3", got)
	}
}

func TestWebhookRetryAfterIsHonoured(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	rc := newReceiver(t, func(_ hit, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	h.mustEndpoint(t, rc.URL)
	h.startRelay(t, func(c *outbox.Config) { c.BackoffMax = time.Hour })
	h.mustAccount(t, "EUR")
	var d delivery
	eventually(t, "the first attempt recorded", func() bool {
		ds := h.deliveries(t, "")
		d = ds[0]
		return d.Attempts == 1 && d.LastStatusCode != nil
	})
	// Without Retry-After the next attempt would be due within 5 ms (BackoffBase).
	if d.Status != "pending" || d.NextAttemptAt == nil || time.Until(*d.NextAttemptAt) < 100*time.Second {
		t.Errorf("delivery %+v: want pending, next attempt about 120 s after the 503", d)
	}
	if *d.LastStatusCode != 503 || d.LastError == nil || !strings.HasPrefix(*d.LastError, "HTTP 503") {
		t.Errorf("last error %v / %v", d.LastStatusCode, d.LastError)
	}
}

func TestWebhookDeadRetryAndReplay(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var broken atomic.Bool
	broken.Store(true)
	rc := newReceiver(t, func(_ hit, w http.ResponseWriter, _ *http.Request) {
		if broken.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("down for maintenance"))
		}
	})
	e := h.mustEndpoint(t, rc.URL)
	h.startRelay(t, func(c *outbox.Config) { c.MaxAttempts = 3 })
	a := h.mustAccount(t, "EUR")
	h.mustDeposit(t, a.ID, 100)
	eventually(t, "two dead deliveries", func() bool { return len(h.deliveries(t, "status=dead")) == 2 })
	dead := h.deliveries(t, "status=dead&endpoint_id="+e.ID)
	for _, d := range dead {
		if d.Attempts != 3 || d.LastError == nil || *d.LastError != "HTTP 503: down for maintenance (attempt 3 of 3: no more attempts)" ||
			d.NextAttemptAt != nil || d.DeliveredAt != nil {
			t.Errorf("dead delivery %+v", d)
		}
	}
	if n := len(rc.got()); n != 6 {
		t.Errorf("%d requests, want 3 per delivery", n)
	}
	broken.Store(false)

	// One delivery by itself.
	var retried delivery
	h.post(t, "/v1/webhook-deliveries/"+dead[1].ID+"/retry", newKey(), "").want(t, http.StatusOK).decode(t, &retried)
	if retried.Status != "pending" || retried.Attempts != 0 || retried.NextAttemptAt == nil {
		t.Errorf("retried = %+v, want pending, due, attempts afresh", retried)
	}
	eventually(t, "the retried one delivered", func() bool { return len(h.deliveries(t, "status=delivered")) == 1 })
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
	eventually(t, "all delivered", func() bool { return len(h.deliveries(t, "status=delivered")) == 2 })
	again := h.post(t, "/v1/webhook-endpoints/"+e.ID+"/replay-dead", key, "{}").want(t, http.StatusOK)
	if !bytes.Equal(again.body, first.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay under the same key: %s", again.body)
	}
	h.post(t, "/v1/webhook-endpoints/"+e.ID+"/replay-dead", newKey(), "").want(t, http.StatusOK).decode(t, &rp)
	if rp.Replayed != 0 {
		t.Errorf("a second replay moved %d deliveries, want 0", rp.Replayed)
	}
	perID := map[string]int{}
	for _, hit := range rc.got() {
		perID[hit.id]++
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
	rc := newReceiver(t, func(_ hit, w http.ResponseWriter, _ *http.Request) {
		if gone.Load() {
			w.WriteHeader(http.StatusGone)
		}
	})
	e := h.mustEndpoint(t, rc.URL)
	h.startRelay(t, nil)
	a := h.mustAccount(t, "EUR")
	eventually(t, "dead after 410", func() bool { return len(h.deliveries(t, "status=dead")) == 1 })
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
	eventually(t, "both dead", func() bool { return len(h.deliveries(t, "status=dead")) == 2 })
	if n := len(rc.got()); n != 1 {
		t.Errorf("a disabled endpoint got %d requests, want only the first", n)
	}
	gone.Store(false)
	var rp struct{ Replayed int }
	h.post(t, "/v1/webhook-endpoints/"+e.ID+"/replay-dead", newKey(), "").want(t, http.StatusOK).decode(t, &rp)
	h.get(t, "/v1/webhook-endpoints/"+e.ID).want(t, http.StatusOK).decode(t, &got)
	if rp.Replayed != 2 || got.Status != "enabled" {
		t.Errorf("replayed %d, endpoint %s; want 2, enabled", rp.Replayed, got.Status)
	}
	eventually(t, "both delivered", func() bool { return len(h.deliveries(t, "status=delivered")) == 2 })
}

// TestThreeRelaysDeliverEachEventOncePerEndpoint runs three relays on one
// database while 2,000 events are written: each endpoint gets each event
// exactly once (no lease expires: the receivers answer at once).
func TestThreeRelaysDeliverEachEventOncePerEndpoint(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	rcs := []*receiver{newReceiver(t, nil), newReceiver(t, nil)}
	for _, rc := range rcs {
		h.mustEndpoint(t, rc.URL)
	}
	relays := []*testRelay{h.startRelay(t, nil), h.startRelay(t, nil), h.startRelay(t, nil)}

	const writers, perWriter = 8, 250 // an account.created and 249 deposits each
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := h.mustAccount(t, "EUR")
			for i := 1; i < perWriter; i++ {
				h.mustDeposit(t, a.ID, 1)
			}
		}()
	}
	wg.Wait()
	const events = writers * perWriter
	eventually(t, "every delivery delivered", func() bool {
		return h.countWhere(t, `SELECT 1 FROM webhook_deliveries WHERE status = 'delivered'`) == 2*events
	})
	for i, rc := range rcs {
		perID := map[string]int{}
		for _, hit := range rc.got() {
			perID[hit.id]++
		}
		if len(perID) != events {
			t.Errorf("receiver %d got %d distinct events, want %d", i, len(perID), events)
		}
		for id, n := range perID {
			if n != 1 {
				t.Errorf("receiver %d got %s %d times", i, id, n)
			}
		}
	}
	var shares []float64
	for _, r := range relays {
		shares = append(shares, r.metric(t, "safeflow_webhook_deliveries_total", "outcome", "delivered"))
		if lost := r.metric(t, "safeflow_webhook_deliveries_total", "outcome", "lease_lost"); lost != 0 {
			t.Errorf("a relay lost %v leases", lost)
		}
	}
	t.Logf("deliveries per relay: %v", shares)
}

// TestKilledRelaysWorkIsRedelivered kills a relay while it holds a batch
// (its context is cancelled mid-request; it records nothing). Another relay
// takes the deliveries over once their lease has run out.
func TestKilledRelaysWorkIsRedelivered(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var hang atomic.Bool
	hang.Store(true)
	var hung atomic.Int64
	rc := newReceiver(t, func(_ hit, w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			hung.Add(1)
			<-r.Context().Done() // until the relay goes away
		}
	})
	h.mustEndpoint(t, rc.URL)
	a := h.mustAccount(t, "EUR")
	for i := 0; i < 4; i++ {
		h.mustDeposit(t, a.ID, 10)
	}
	lease := func(c *outbox.Config) { c.Lease = time.Second; c.DeliveryTimeout = 20 * time.Second }
	victim := h.startRelay(t, lease)
	eventually(t, "the relay holding all five", func() bool { return hung.Load() == 5 })
	victim.kill()
	hang.Store(false)
	if n := h.countWhere(t, `SELECT 1 FROM webhook_deliveries WHERE status = 'pending' AND attempts = 1 AND lease IS NOT NULL`); n != 5 {
		t.Fatalf("%d deliveries still leased by the dead relay, want 5", n)
	}
	heir := h.startRelay(t, lease)
	eventually(t, "all delivered by the other relay", func() bool { return len(h.deliveries(t, "status=delivered")) == 5 })
	for _, d := range h.deliveries(t, "") {
		if d.Attempts != 2 {
			t.Errorf("delivery %s took %d attempts, want 2 (the abandoned one counts)", d.ID, d.Attempts)
		}
	}
	if got := heir.metric(t, "safeflow_webhook_deliveries_total", "outcome", "delivered"); got != 5 {
		t.Errorf("the second relay delivered %v, want 5", got)
	}
}

// TestLostLeaseNeverOverwrites holds an attempt past its lease: another
// claim delivers the event, and the late failure of the first attempt is
// not recorded over it.
func TestLostLeaseNeverOverwrites(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	release := make(chan struct{})
	rc := newReceiver(t, func(hit hit, w http.ResponseWriter, _ *http.Request) {
		if hit.attempt == 1 {
			<-release
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	h.mustEndpoint(t, rc.URL)
	relay := h.startRelay(t, func(c *outbox.Config) { c.Lease = time.Second; c.DeliveryTimeout = 20 * time.Second })
	h.mustAccount(t, "EUR")
	eventually(t, "the second claim delivered", func() bool { return len(h.deliveries(t, "status=delivered")) == 1 })
	close(release)
	eventually(t, "the first attempt's outcome refused", func() bool {
		return relay.metric(t, "safeflow_webhook_deliveries_total", "outcome", "lease_lost") == 1
	})
	d := h.deliveries(t, "")[0]
	if d.Status != "delivered" || d.Attempts != 2 || *d.LastStatusCode != 200 {
		t.Errorf("delivery %+v, want delivered by attempt 2, untouched by the late 500", d)
	}
}

// TestEndpointReceivesEventsCommittedAfterIt streams deposits while an
// endpoint is created: every deposit requested after the endpoint's 201
// is delivered to it, none answered before its request was sent is.
func TestEndpointReceivesEventsCommittedAfterIt(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	rc := newReceiver(t, nil)
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
				h.post(t, "/v1/accounts/"+a.ID+"/deposits", newKey(), `{"amount":1}`).want(t, http.StatusCreated).decode(t, &m)
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

func TestRetentionPurgesDeliveredKeepsDead(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.purged = append(h.purged, testdb.OutboxPurged)
	ok := newReceiver(t, nil)
	failing := newReceiver(t, func(_ hit, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	h.mustEndpoint(t, ok.URL)
	h.mustEndpoint(t, failing.URL, "deposit.created")
	relay := h.startRelay(t, func(c *outbox.Config) {
		c.MaxAttempts = 1
		c.Retention = outbox.Retention{Delivered: time.Nanosecond, Dead: time.Hour, Events: time.Nanosecond, Every: time.Hour}
	})
	a := h.mustAccount(t, "EUR")
	h.mustDeposit(t, a.ID, 5)
	eventually(t, "2 delivered, 1 dead", func() bool {
		return len(h.deliveries(t, "status=delivered")) == 2 && len(h.deliveries(t, "status=dead")) == 1
	})
	relay.Purge(context.Background())
	if got := h.deliveries(t, ""); len(got) != 1 || got[0].Status != "dead" {
		t.Errorf("after the purge: %+v, want only the dead delivery", got)
	}
	if n := h.countWhere(t, `SELECT 1 FROM events`); n != 1 {
		t.Errorf("%d events after the purge, want only the one a dead delivery still needs", n)
	}
	if n := h.countWhere(t, `SELECT 1 FROM events e JOIN webhook_deliveries d ON d.event_id = e.id WHERE e.type = 'deposit.created'`); n != 1 {
		t.Errorf("the deposit's event, which its dead delivery needs, is gone")
	}
	if got := relay.metric(t, "safeflow_outbox_purged_total", "kind", "delivered"); got != 2 {
		t.Errorf("purged delivered = %v, want 2", got)
	}
	if got := relay.metric(t, "safeflow_webhook_dead"); got != 1 {
		t.Errorf("dead gauge = %v, want 1", got)
	}
}
