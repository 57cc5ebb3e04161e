package http_test

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/safeflow/safeflow/internal/relaytest"
)

// While one long transaction of a tenant is open (a deposit held after its
// writes, as a 1000-item batch would be), creating and deleting an endpoint
// answer at once, and deposits on other accounts of the tenant keep their
// pace: an endpoint change makes no request of the tenant wait.
func TestEndpointChangesMakeNoRequestWait(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	rc := relaytest.NewReceiver(t, nil)
	held, other := h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	h.startRelay(t, nil) // removes the deliveries that deposits racing a delete insert for its endpoint
	g := h.holdAtGate(t, "long")
	long := make(chan response, 1)
	go func() { long <- h.post(t, "/v1/accounts/"+held.ID+"/deposits", "long", `{"amount":5}`) }()
	g.WaitHeld(t, 1)

	var slowest atomic.Int64
	var count atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				if !h.post(t, "/v1/accounts/"+other.ID+"/deposits", newKey(), `{"amount":1}`).is(t, http.StatusCreated) {
					return
				}
				d := time.Since(start)
				count.Add(1)
				for {
					s := slowest.Load()
					if int64(d) <= s || slowest.CompareAndSwap(s, int64(d)) {
						break
					}
				}
			}
		})
	}

	time.Sleep(100 * time.Millisecond)
	for range 3 {
		start := time.Now()
		e := h.mustEndpoint(t, rc.URL)
		created := time.Since(start)
		start = time.Now()
		send(t, h.request(t, http.MethodDelete, "/v1/webhook-endpoints/"+e.ID, "")).want(t, http.StatusNoContent)
		deleted := time.Since(start)
		if created > 300*time.Millisecond || deleted > 300*time.Millisecond {
			t.Errorf("with a transaction of the tenant open, creating an endpoint took %v, deleting it %v", created, deleted)
		}
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	select {
	case r := <-long:
		t.Fatalf("the held deposit finished before the gate opened: %d %s", r.status, r.body)
	default:
	}
	g.Open(t)
	(<-long).want(t, http.StatusCreated)

	relaytest.Eventually(t, "no delivery left to a deleted endpoint", func() bool { return h.count(t, "webhook_deliveries") == 0 })
	if d := time.Duration(slowest.Load()); d > 300*time.Millisecond {
		t.Errorf("a deposit on another account took %v while endpoints were created and deleted", d)
	}
	t.Logf("%d deposits on another account meanwhile, the slowest in %v", count.Load(), time.Duration(slowest.Load()))
}

// Nothing is sent to an endpoint after its DELETE answered 204: an attempt
// under way is waited for, and a delivery that a transaction which read the
// endpoint before the delete inserts afterwards is removed, unsent.
func TestNothingIsSentAfterTheEndpointIsDeleted(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var deletedAt atomic.Pointer[time.Time]
	var late atomic.Int64
	release := make(chan struct{})
	var first sync.Once
	rc := relaytest.NewReceiver(t, func(hit relaytest.Hit, w http.ResponseWriter, r *http.Request) {
		if d := deletedAt.Load(); d != nil {
			late.Add(1)
		}
		first.Do(func() { <-release }) // the first attempt is under way until released
	})
	a, b := h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	e := h.mustEndpoint(t, rc.URL)
	h.startRelay(t, nil)

	// A transaction that inserts its event, and so a delivery to e, before
	// the delete, and commits after it.
	g := h.holdAtGate(t, "late")
	late1 := make(chan response, 1)
	go func() { late1 <- h.post(t, "/v1/accounts/"+a.ID+"/deposits", "late", `{"amount":5}`) }()
	g.WaitHeld(t, 1)

	// An attempt under way: the first delivered event is held by the receiver.
	h.mustDeposit(t, b.ID, 1)
	relaytest.Eventually(t, "an attempt under way", func() bool { return len(rc.Got()) == 1 })

	deleted := make(chan response, 1)
	go func() { deleted <- send(t, h.request(t, http.MethodDelete, "/v1/webhook-endpoints/"+e.ID, "")) }()
	select {
	case r := <-deleted:
		t.Fatalf("DELETE answered %d while an attempt to the endpoint was under way", r.status)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	r := <-deleted
	now := time.Now()
	deletedAt.Store(&now)
	r.want(t, http.StatusNoContent)

	g.Open(t)
	(<-late1).want(t, http.StatusCreated)
	h.mustDeposit(t, b.ID, 1)
	relaytest.Eventually(t, "the late delivery removed unsent", func() bool {
		return h.count(t, "webhook_deliveries") == 0
	})
	time.Sleep(200 * time.Millisecond) // the relay polls every 50 ms
	if n := late.Load(); n > 0 {
		t.Errorf("%d requests reached the endpoint after its DELETE answered 204", n)
	}
	if got := len(rc.Got()); got != 1 {
		t.Errorf("the receiver got %d requests, want the one under way before the delete", got)
	}
}
