package http_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/safeflow/safeflow/internal/outbox"
)

// hit is one request a receiver got.
type hit struct {
	id, timestamp, signature, contentType string
	body                                  []byte
	attempt                               int // 1-based, per webhook-id
}

// receiver is a real webhook endpoint. respond decides each answer; it may
// block (the relay's timeout or death ends the request).
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	hits    []hit
	perID   map[string]int
	respond func(h hit, w http.ResponseWriter, r *http.Request)
}

func newReceiver(t *testing.T, respond func(h hit, w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{perID: map[string]int{}, respond: respond}
	if rc.respond == nil {
		rc.respond = func(hit, http.ResponseWriter, *http.Request) {}
	}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		id := r.Header.Get("webhook-id")
		rc.perID[id]++
		h := hit{id: id, timestamp: r.Header.Get("webhook-timestamp"), signature: r.Header.Get("webhook-signature"),
			contentType: r.Header.Get("Content-Type"), body: body, attempt: rc.perID[id]}
		rc.hits = append(rc.hits, h)
		rc.mu.Unlock()
		rc.respond(h, w, r)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) got() []hit {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]hit(nil), rc.hits...)
}

// verifySignature checks a Standard Webhooks signature from the scheme's
// text alone (not with the code under test): HMAC-SHA256 keyed with the
// base64-decoded secret over "id.timestamp.body", base64, after "v1,"; the
// header may carry several space-separated signatures.
func verifySignature(secret string, h hit) bool {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, key)
	io.WriteString(mac, h.id+"."+h.timestamp+".")
	mac.Write(h.body)
	want := mac.Sum(nil)
	for _, sig := range strings.Fields(h.signature) {
		b64, ok := strings.CutPrefix(sig, "v1,")
		got, err := base64.StdEncoding.DecodeString(b64)
		if ok && err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}

// testRelay is a relay on the harness's database with its own metrics.
type testRelay struct {
	*outbox.Relay
	reg    *prometheus.Registry
	cancel context.CancelFunc // kills it: deliveries in flight are abandoned
	done   chan struct{}
}

// startRelay runs a relay with fast test settings, changed by cfg; it is
// shut down when the test ends (before the invariants are checked).
func (h *harness) startRelay(t *testing.T, cfg func(*outbox.Config)) *testRelay {
	t.Helper()
	tr := &testRelay{reg: prometheus.NewRegistry(), done: make(chan struct{})}
	c := outbox.Config{
		BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond, DeliveryTimeout: 5 * time.Second,
		PollInterval: 50 * time.Millisecond, AllowPrivate: true, // the receivers listen on 127.0.0.1
		Logger: zerolog.New(os.Stderr).Level(zerolog.WarnLevel), Metrics: outbox.NewMetrics(tr.reg, h.pool),
	}
	if cfg != nil {
		cfg(&c)
	}
	tr.Relay = outbox.NewRelay(h.pool, c)
	ctx, cancel := context.WithCancel(context.Background())
	tr.cancel = cancel
	go func() {
		defer close(tr.done)
		_ = tr.Run(ctx)
	}()
	t.Cleanup(func() {
		sctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
		defer stop()
		if err := tr.Shutdown(sctx); err != nil {
			t.Errorf("relay shutdown: %v", err)
		}
		cancel()
		<-tr.done
	})
	return tr
}

// kill cancels the relay's context: what it holds is abandoned to the leases.
func (tr *testRelay) kill() {
	tr.cancel()
	<-tr.done
}

// metric returns the value of a counter or gauge with the given labels.
func (tr *testRelay) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := tr.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

type endpoint struct {
	ID         string   `json:"id"`
	Object     string   `json:"object"`
	URL        string   `json:"url"`
	EventTypes []string `json:"event_types"`
	Status     string   `json:"status"`
	Secret     string   `json:"secret"`
}

type delivery struct {
	ID             string     `json:"id"`
	EventID        string     `json:"event_id"`
	EndpointID     string     `json:"endpoint_id"`
	Status         string     `json:"status"`
	Attempts       int        `json:"attempts"`
	LastError      *string    `json:"last_error"`
	LastStatusCode *int       `json:"last_status_code"`
	NextAttemptAt  *time.Time `json:"next_attempt_at"`
	DeliveredAt    *time.Time `json:"delivered_at"`
}

// mustEndpoint subscribes url to types (all when none) and returns it, secret included.
func (h *harness) mustEndpoint(t *testing.T, url string, types ...string) endpoint {
	t.Helper()
	body := map[string]any{"url": url}
	if len(types) > 0 {
		body["event_types"] = types
	}
	b, _ := json.Marshal(body)
	var e endpoint
	h.post(t, "/v1/webhook-endpoints", newKey(), string(b)).want(t, http.StatusCreated).decode(t, &e)
	return e
}

// deliveries lists every delivery matching the query (e.g. "status=dead").
func (h *harness) deliveries(t *testing.T, query string) []delivery {
	t.Helper()
	var all []delivery
	cursor := ""
	for {
		var page struct {
			Data       []delivery `json:"data"`
			NextCursor *string    `json:"next_cursor"`
		}
		h.get(t, "/v1/webhook-deliveries?limit=100&"+query+cursor).want(t, http.StatusOK).decode(t, &page)
		all = append(all, page.Data...)
		if page.NextCursor == nil {
			return all
		}
		cursor = "&cursor=" + *page.NextCursor
	}
}

// eventually polls cond until it holds, failing the test after a generous
// bound: it waits for the relay, it does not measure it.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countWhere counts the rows of a query's result in the harness's database.
func (h *harness) countWhere(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := h.pool.QueryRow(context.Background(), "SELECT count(*) FROM ("+query+") q", args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func atoi(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }
