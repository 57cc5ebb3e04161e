package http_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	apihttp "github.com/safeflow/safeflow/internal/http"
	"github.com/safeflow/safeflow/internal/promtest"
	"github.com/safeflow/safeflow/internal/store"
	"github.com/safeflow/safeflow/internal/testdb"
)

// Past its limits the API answers at once with 503 and Retry-After instead
// of queueing without bound, stores nothing for the refused requests, and
// serves fully again the moment the load drops.
func TestOverloadIsShedFast(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	h := startHarness(t, pool, pool, func(c *apihttp.Config, _ *store.Options) {
		c.Admission = apihttp.Admission{MaxInFlight: 2, MaxQueued: 2, QueueWait: 300 * time.Millisecond}
	})
	a := h.mustAccount(t, "USD")
	deposits := "/v1/accounts/" + a.ID + "/deposits"
	metric := func(name string, labels ...string) float64 { return promtest.Value(t, h.apiMetrics, name, labels...) }

	// Two requests hold both slots (each held in the database, after its
	// writes, on an account of its own).
	g := h.holdAtGate(t, "held-%")
	held := make(chan response, 2)
	for _, k := range []string{"held-1", "held-2"} {
		b := h.mustAccount(t, "USD")
		go func() { held <- h.post(t, "/v1/accounts/"+b.ID+"/deposits", k, `{"amount":1}`) }()
	}
	g.WaitHeld(t, 2)

	// A burst: two of it queue (and time out), the rest are shed at once.
	type answer struct {
		r    response
		took time.Duration
	}
	const burst = 30
	answers := make(chan answer, burst)
	var wg sync.WaitGroup
	for i := range burst {
		wg.Go(func() {
			start := time.Now()
			r := h.post(t, deposits, "burst-"+itoa(int64(i)), `{"amount":1}`)
			answers <- answer{r, time.Since(start)}
		})
	}
	wg.Wait()
	close(answers)
	var fast, slow int
	for a := range answers {
		if a.r.status != http.StatusServiceUnavailable || a.r.header.Get("Retry-After") == "" {
			t.Errorf("a request past the limits answered %d (Retry-After %q): %s", a.r.status, a.r.header.Get("Retry-After"), a.r.body)
			continue
		}
		if p := a.r.problem(t); p.Code != "service_unavailable" || !strings.Contains(p.Detail, "nothing was applied") {
			t.Errorf("problem %+v", p)
		}
		switch {
		case a.took < 250*time.Millisecond:
			fast++
		case a.took < time.Second:
			slow++ // queued, then refused after QueueWait
		default:
			t.Errorf("a refusal took %v", a.took)
		}
	}
	if fast < burst-2 || slow > 2 {
		t.Errorf("%d refused at once and %d after queueing; want at most 2 queued (MaxQueued)", fast, slow)
	}
	if got := metric("safeflow_http_shed_total", "reason", "queue_full") + metric("safeflow_http_shed_total", "reason", "queue_timeout"); got != burst {
		t.Errorf("safeflow_http_shed_total = %v, want %d", got, burst)
	}
	if got := metric("safeflow_http_in_flight"); got != 2 {
		t.Errorf("safeflow_http_in_flight = %v while two requests are held, want 2", got)
	}
	var stored int
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM idempotency_keys WHERE key LIKE 'burst-%'`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != 0 {
		t.Errorf("%d refused requests left an idempotency record", stored)
	}

	// A queued client that goes away leaves the queue at once.
	ctx, cancel := context.WithCancel(context.Background())
	req := h.request(t, http.MethodPost, deposits, `{"amount":1}`, "Idempotency-Key", "gone")
	go func() { _, _ = http.DefaultClient.Do(req.WithContext(ctx)) }()
	relaxUntil(t, func() bool { return metric("safeflow_http_queued") == 1 })
	cancel()
	relaxUntil(t, func() bool { return metric("safeflow_http_queued") == 0 })

	// The load drops: full service at once, and the refused keys work.
	g.Open(t)
	for range 2 {
		(<-held).want(t, http.StatusCreated)
	}
	for i := range 3 {
		h.post(t, deposits, "burst-"+itoa(int64(i)), `{"amount":1}`).want(t, http.StatusCreated)
	}
	if av, _, _ := h.balances(t, a.ID); av != 3 {
		t.Errorf("balance %d, want 3: the three retried deposits", av)
	}
}

// relaxUntil polls cond for up to two seconds.
func relaxUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 2s")
		}
	}
}
