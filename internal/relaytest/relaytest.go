// Package relaytest helps test what delivers webhooks: real receivers
// (httptest servers that record every request), a Standard Webhooks
// signature check written from the scheme's text rather than with the code
// under test, and relays with fast settings that stop with the test.
package relaytest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/safeflow/safeflow/internal/promtest"
	"github.com/safeflow/safeflow/internal/relay"
)

// Hit is one request a receiver got.
type Hit struct {
	ID, Timestamp, Signature, ContentType string
	Body                                  []byte
	Attempt                               int // 1-based, per webhook-id
}

// Receiver is a real webhook endpoint.
type Receiver struct {
	*httptest.Server
	mu      sync.Mutex
	hits    []Hit
	perID   map[string]int
	respond func(h Hit, w http.ResponseWriter, r *http.Request)
}

// NewReceiver starts a receiver that answers each request with respond
// (200 when nil). respond may block: the relay's timeout or death ends the
// request. It stops when the test ends.
func NewReceiver(t testing.TB, respond func(h Hit, w http.ResponseWriter, r *http.Request)) *Receiver {
	t.Helper()
	rc := &Receiver{perID: map[string]int{}, respond: respond}
	if rc.respond == nil {
		rc.respond = func(Hit, http.ResponseWriter, *http.Request) {}
	}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		id := r.Header.Get("webhook-id")
		rc.perID[id]++
		h := Hit{ID: id, Timestamp: r.Header.Get("webhook-timestamp"), Signature: r.Header.Get("webhook-signature"),
			ContentType: r.Header.Get("Content-Type"), Body: body, Attempt: rc.perID[id]}
		rc.hits = append(rc.hits, h)
		rc.mu.Unlock()
		rc.respond(h, w, r)
	}))
	t.Cleanup(rc.Close)
	return rc
}

// Got returns the requests received so far, in arrival order.
func (rc *Receiver) Got() []Hit {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]Hit(nil), rc.hits...)
}

// PerID counts the requests received so far by webhook-id.
func (rc *Receiver) PerID() map[string]int {
	n := map[string]int{}
	for _, h := range rc.Got() {
		n[h.ID]++
	}
	return n
}

// VerifySignature checks a Standard Webhooks signature from the scheme's
// text alone (not with the code under test): HMAC-SHA256 keyed with the
// base64-decoded secret over "id.timestamp.body", base64, after "v1,"; the
// header may carry several space-separated signatures.
func VerifySignature(secret string, h Hit) bool {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, key)
	io.WriteString(mac, h.ID+"."+h.Timestamp+".")
	mac.Write(h.Body)
	want := mac.Sum(nil)
	for _, sig := range strings.Fields(h.Signature) {
		b64, ok := strings.CutPrefix(sig, "v1,")
		got, err := base64.StdEncoding.DecodeString(b64)
		if ok && err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}

// Relay is a relay running for a test, with its own metrics.
type Relay struct {
	*relay.Relay
	Registry *prometheus.Registry
	Metrics  *relay.Metrics     // registered on Registry
	cancel   context.CancelFunc // kills it: deliveries in flight are abandoned
	done     chan struct{}
}

// StartRelay runs a relay on pool with fast test settings (changed by cfg):
// retries after milliseconds, polling every 50 ms, receivers on 127.0.0.1
// allowed. It is shut down when the test ends, before the cleanups
// registered earlier (the invariants) run.
func StartRelay(t testing.TB, pool *pgxpool.Pool, cfg func(*relay.Config)) *Relay {
	t.Helper()
	tr := &Relay{Registry: prometheus.NewRegistry(), done: make(chan struct{})}
	tr.Metrics = relay.NewMetrics(tr.Registry, pool)
	c := relay.Config{
		BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond, DeliveryTimeout: 5 * time.Second,
		PollInterval: 50 * time.Millisecond, AllowPrivate: true,
		Logger: zerolog.New(os.Stderr).Level(zerolog.WarnLevel), Metrics: tr.Metrics,
	}
	if cfg != nil {
		cfg(&c)
	}
	tr.Relay = relay.New(pool, c)
	ctx, cancel := context.WithCancel(context.Background())
	tr.cancel = cancel
	go func() {
		defer close(tr.done)
		tr.Run(ctx)
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

// Kill cancels the relay's context: what it holds is abandoned to the leases.
func (tr *Relay) Kill() {
	tr.cancel()
	<-tr.done
}

// Metric returns the value of one of the relay's counters or gauges.
func (tr *Relay) Metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	return promtest.Value(t, tr.Registry, name, labels...)
}

// Eventually polls cond until it holds, failing the test after a generous
// bound: it waits for relays, it does not measure them. Call it from the
// test's goroutine.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
