package http_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/safeflow/safeflow/internal/faultproxy"
	"github.com/safeflow/safeflow/internal/promtest"
	"github.com/safeflow/safeflow/internal/testdb"
)

// newProxiedHarness starts the API with its store reaching PostgreSQL
// through a fault proxy; the test's own queries (h.pool) go direct.
func newProxiedHarness(t *testing.T) (*harness, *faultproxy.Proxy) {
	t.Helper()
	pool := testdb.New(t)
	proxy, storePool := faultproxy.Around(t, pool)
	return startHarness(t, pool, storePool), proxy
}

// The connection dies during COMMIT (product.md §3): the server learns the
// outcome before it answers, and never says "nothing was applied" unless
// that is known. Each case is then retried with the same key, and the
// deposit is applied exactly once.
func TestALostCommitIsAnsweredTruthfully(t *testing.T) {
	t.Parallel()
	h, proxy := newProxiedHarness(t)
	a := h.mustAccount(t, "USD")
	deposits := "/v1/accounts/" + a.ID + "/deposits"
	balance := func() int64 { av, _, _ := h.balances(t, a.ID); return av }
	outcomes := func(o string) float64 {
		return promtest.Value(t, h.storeMetrics, "safeflow_commit_outcomes_learned_total", "outcome", o)
	}

	t.Run("committed: the stored answer", func(t *testing.T) {
		fired := proxy.FailNextCommit(faultproxy.LoseReply, 0)
		r := h.post(t, deposits, "lost-reply", `{"amount":10}`).want(t, http.StatusCreated)
		<-fired
		if r.header.Get("Idempotent-Replayed") != "false" {
			t.Errorf("Idempotent-Replayed = %q, want false: this is the request's own answer", r.header.Get("Idempotent-Replayed"))
		}
		if got := balance(); got != 10 {
			t.Errorf("balance %d, want 10", got)
		}
		again := h.post(t, deposits, "lost-reply", `{"amount":10}`).want(t, http.StatusCreated)
		if string(again.body) != string(r.body) || again.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("the retry answered %s (replayed %s), want a replay of %s", again.body, again.header.Get("Idempotent-Replayed"), r.body)
		}
		if outcomes("committed") != 1 {
			t.Errorf("safeflow_commit_outcomes_learned_total{outcome=committed} = %v, want 1", outcomes("committed"))
		}
	})

	t.Run("not committed: nothing was applied", func(t *testing.T) {
		fired := proxy.FailNextCommit(faultproxy.LoseCommit, 0)
		p := h.post(t, deposits, "lost-commit", `{"amount":20}`).wantProblem(t, http.StatusServiceUnavailable, "service_unavailable")
		<-fired
		if !strings.Contains(p.Detail, "nothing was applied") {
			t.Errorf("detail %q, want it to say nothing was applied", p.Detail)
		}
		if got := balance(); got != 10 {
			t.Errorf("balance %d after a COMMIT that never reached the server, want 10", got)
		}
		h.get(t, "/v1/idempotency-keys/lost-commit").wantProblem(t, http.StatusNotFound, "not_found")
		h.post(t, deposits, "lost-commit", `{"amount":20}`).want(t, http.StatusCreated)
		if got := balance(); got != 30 {
			t.Errorf("balance %d after the retry, want 30", got)
		}
		if outcomes("rolled_back") != 1 {
			t.Errorf("safeflow_commit_outcomes_learned_total{outcome=rolled_back} = %v, want 1", outcomes("rolled_back"))
		}
	})

	t.Run("cannot tell: outcome_unknown", func(t *testing.T) {
		// The server's side stays idle in transaction past lock_timeout (1 s),
		// as a backend still finishing, or one whose client vanished, does.
		fired := proxy.FailNextCommit(faultproxy.HoldOpen, 2500*time.Millisecond)
		r := h.post(t, deposits, "held-commit", `{"amount":40}`)
		p := r.wantProblem(t, http.StatusServiceUnavailable, "outcome_unknown")
		<-fired
		if strings.Contains(p.Detail, "nothing was applied") {
			t.Errorf("detail %q claims nothing was applied, which the server does not know", p.Detail)
		}
		if r.header.Get("Retry-After") == "" {
			t.Error("outcome_unknown without Retry-After")
		}
		var k struct{ Status string }
		h.get(t, "/v1/idempotency-keys/held-commit").want(t, http.StatusOK).decode(t, &k)
		if k.Status != "in_progress" {
			t.Errorf("the held key is %q, want in_progress", k.Status)
		}
		// The held transaction ends (rolled back when its connection closes);
		// the retry with the same key learns the outcome by running.
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := h.post(t, deposits, "held-commit", `{"amount":40}`)
			if r.status == http.StatusCreated {
				break
			}
			if r.status != http.StatusConflict || time.Now().After(deadline) {
				t.Fatalf("retry answered %d: %s", r.status, r.body)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got := balance(); got != 70 {
			t.Errorf("balance %d, want 70", got)
		}
		if outcomes("unknown") != 1 {
			t.Errorf("safeflow_commit_outcomes_learned_total{outcome=unknown} = %v, want 1", outcomes("unknown"))
		}
	})

	t.Run("an endpoint's DELETE", func(t *testing.T) {
		e := h.mustEndpoint(t, "http://127.0.0.1:1/hook")
		fired := proxy.FailNextCommit(faultproxy.LoseReply, 0)
		send(t, h.request(t, http.MethodDelete, "/v1/webhook-endpoints/"+e.ID, "")).want(t, http.StatusNoContent)
		<-fired
		h.get(t, "/v1/webhook-endpoints/"+e.ID).wantProblem(t, http.StatusNotFound, "not_found")
	})
}
