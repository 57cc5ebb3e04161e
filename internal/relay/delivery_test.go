package relay_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/faultproxy"
	"github.com/safeflow/safeflow/internal/relay"
	"github.com/safeflow/safeflow/internal/relaytest"
	"github.com/safeflow/safeflow/internal/testdb"
)

func TestRetriedUntilDelivered(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	rc := relaytest.NewReceiver(t, func(hit relaytest.Hit, w http.ResponseWriter, _ *http.Request) {
		switch hit.Attempt {
		case 1:
			w.WriteHeader(http.StatusInternalServerError)
		case 2:
			w.Header().Set("Location", "https://elsewhere.example.com/")
			w.WriteHeader(http.StatusFound) // a redirect is a failure, not followed
		case 3:
			time.Sleep(500 * time.Millisecond) // past the delivery timeout
		}
	})
	e := f.endpoint(t, rc.URL)
	r := relaytest.StartRelay(t, f.pool, func(c *relay.Config) { c.DeliveryTimeout = 200 * time.Millisecond })
	f.account(t)
	relaytest.Eventually(t, "delivered", func() bool { return len(f.withStatus(t, domain.DeliveryDelivered)) == 1 })
	d := f.deliveries(t, domain.DeliveryFilter{EndpointID: e.ID})[0]
	if d.Attempts != 4 || *d.LastStatusCode != 200 {
		t.Errorf("delivery %+v, want delivered at attempt 4", d)
	}
	hits := rc.Got()
	if len(hits) != 4 {
		t.Fatalf("%d requests, want 4", len(hits))
	}
	for _, hit := range hits {
		if hit.ID != d.EventID || !relaytest.VerifySignature(e.Secret, hit) {
			t.Errorf("attempt %d: webhook-id %s (want the event id %s on every attempt), signature valid %v",
				hit.Attempt, hit.ID, d.EventID, relaytest.VerifySignature(e.Secret, hit))
		}
	}
	for result, want := range map[string]float64{"5xx": 1, "3xx": 1, "timeout": 1, "2xx": 1} {
		if got := r.Metric(t, "safeflow_webhook_attempts_total", "result", result); got != want {
			t.Errorf("attempts{result=%s} = %v, want %v", result, got, want)
		}
	}
	if got := r.Metric(t, "safeflow_webhook_deliveries_total", "outcome", "retry"); got != 3 {
		t.Errorf("deliveries{outcome=retry} = %v, want 3", got)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	rc := relaytest.NewReceiver(t, func(_ relaytest.Hit, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	f.endpoint(t, rc.URL)
	relaytest.StartRelay(t, f.pool, func(c *relay.Config) { c.BackoffMax = time.Hour })
	f.account(t)
	var d domain.Delivery
	relaytest.Eventually(t, "the first attempt recorded", func() bool {
		d = f.deliveries(t, domain.DeliveryFilter{})[0]
		return d.Attempts == 1 && d.LastStatusCode != nil
	})
	// Without Retry-After the next attempt would be due within 5 ms (BackoffBase).
	if d.Status != domain.DeliveryPending || d.NextAttemptAt == nil || time.Until(*d.NextAttemptAt) < 100*time.Second {
		t.Errorf("delivery %+v: want pending, next attempt about 120 s after the 503", d)
	}
	if *d.LastStatusCode != 503 || d.LastError == nil || !strings.HasPrefix(*d.LastError, "HTTP 503") {
		t.Errorf("last error %v / %v", d.LastStatusCode, d.LastError)
	}
}

// TestThreeRelaysDeliverEachEventOncePerEndpoint runs three relays on one
// database while 2,000 events are written: each endpoint gets each event
// exactly once (no lease expires: the receivers answer at once).
func TestThreeRelaysDeliverEachEventOncePerEndpoint(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	rcs := []*relaytest.Receiver{relaytest.NewReceiver(t, nil), relaytest.NewReceiver(t, nil)}
	for _, rc := range rcs {
		f.endpoint(t, rc.URL)
	}
	relays := []*relaytest.Relay{relaytest.StartRelay(t, f.pool, nil), relaytest.StartRelay(t, f.pool, nil), relaytest.StartRelay(t, f.pool, nil)}

	const writers, perWriter = 8, 250 // an account.created and 249 deposits each
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := f.openAccount()
			for i := 1; i < perWriter && err == nil; i++ {
				err = f.makeDeposit(a.ID, 1)
			}
			if err != nil {
				t.Errorf("writer %d: %v", w, err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	const events = writers * perWriter
	relaytest.Eventually(t, "every delivery delivered", func() bool {
		return f.countWhere(t, `SELECT 1 FROM webhook_deliveries WHERE status = 'delivered'`) == 2*events
	})
	for i, rc := range rcs {
		perID := rc.PerID()
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
		shares = append(shares, r.Metric(t, "safeflow_webhook_deliveries_total", "outcome", "delivered"))
		if lost := r.Metric(t, "safeflow_webhook_deliveries_total", "outcome", "lease_lost"); lost != 0 {
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
	f := newFixture(t)
	var hang atomic.Bool
	hang.Store(true)
	var hung atomic.Int64
	rc := relaytest.NewReceiver(t, func(_ relaytest.Hit, w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			hung.Add(1)
			<-r.Context().Done() // until the relay goes away
		}
	})
	f.endpoint(t, rc.URL)
	a := f.account(t)
	for i := 0; i < 4; i++ {
		f.deposit(t, a.ID, 10)
	}
	lease := func(c *relay.Config) { c.Lease = time.Second; c.DeliveryTimeout = 20 * time.Second }
	victim := relaytest.StartRelay(t, f.pool, lease)
	relaytest.Eventually(t, "the relay holding all five", func() bool { return hung.Load() == 5 })
	victim.Kill()
	hang.Store(false)
	if n := f.countWhere(t, `SELECT 1 FROM webhook_deliveries WHERE status = 'pending' AND attempts = 1 AND lease IS NOT NULL`); n != 5 {
		t.Fatalf("%d deliveries still leased by the dead relay, want 5", n)
	}
	heir := relaytest.StartRelay(t, f.pool, lease)
	relaytest.Eventually(t, "all delivered by the other relay", func() bool { return len(f.withStatus(t, domain.DeliveryDelivered)) == 5 })
	for _, d := range f.deliveries(t, domain.DeliveryFilter{}) {
		if d.Attempts != 2 {
			t.Errorf("delivery %s took %d attempts, want 2 (the abandoned one counts)", d.ID, d.Attempts)
		}
	}
	if got := heir.Metric(t, "safeflow_webhook_deliveries_total", "outcome", "delivered"); got != 5 {
		t.Errorf("the second relay delivered %v, want 5", got)
	}
}

// TestLostLeaseNeverOverwrites holds an attempt past its lease: another
// claim delivers the event, and the late failure of the first attempt is
// not recorded over it.
func TestLostLeaseNeverOverwrites(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	release := make(chan struct{})
	rc := relaytest.NewReceiver(t, func(hit relaytest.Hit, w http.ResponseWriter, _ *http.Request) {
		if hit.Attempt == 1 {
			<-release
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	f.endpoint(t, rc.URL)
	r := relaytest.StartRelay(t, f.pool, func(c *relay.Config) { c.Lease = time.Second; c.DeliveryTimeout = 20 * time.Second })
	f.account(t)
	relaytest.Eventually(t, "the second claim delivered", func() bool { return len(f.withStatus(t, domain.DeliveryDelivered)) == 1 })
	close(release)
	relaytest.Eventually(t, "the first attempt's outcome refused", func() bool {
		return r.Metric(t, "safeflow_webhook_deliveries_total", "outcome", "lease_lost") == 1
	})
	d := f.deliveries(t, domain.DeliveryFilter{})[0]
	if d.Status != domain.DeliveryDelivered || d.Attempts != 2 || *d.LastStatusCode != 200 {
		t.Errorf("delivery %+v, want delivered by attempt 2, untouched by the late 500", d)
	}
}

func TestRetentionPurgesDeliveredKeepsDead(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.purged = append(f.purged, testdb.OutboxPurged)
	ok := relaytest.NewReceiver(t, nil)
	failing := relaytest.NewReceiver(t, func(_ relaytest.Hit, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	f.endpoint(t, ok.URL)
	f.endpoint(t, failing.URL, "deposit.created")
	r := relaytest.StartRelay(t, f.pool, func(c *relay.Config) { c.MaxAttempts = 1 })
	a := f.account(t)
	f.deposit(t, a.ID, 5)
	relaytest.Eventually(t, "2 delivered, 1 dead", func() bool {
		return len(f.withStatus(t, domain.DeliveryDelivered)) == 2 && len(f.withStatus(t, domain.DeliveryDead)) == 1
	})
	// One run of each retention job, in their order: deliveries first, then
	// the events no delivery needs any more.
	for _, j := range (relay.Retention{Delivered: time.Nanosecond, Dead: time.Hour, Events: time.Nanosecond}).Jobs(f.pool, r.Metrics) {
		if _, err := j.Run(context.Background()); err != nil {
			t.Fatalf("%s: %v", j.Name, err)
		}
	}
	if got := f.deliveries(t, domain.DeliveryFilter{}); len(got) != 1 || got[0].Status != domain.DeliveryDead {
		t.Errorf("after the purge: %+v, want only the dead delivery", got)
	}
	if n := f.countWhere(t, `SELECT 1 FROM events`); n != 1 {
		t.Errorf("%d events after the purge, want only the one a dead delivery still needs", n)
	}
	if n := f.countWhere(t, `SELECT 1 FROM events e JOIN webhook_deliveries d ON d.event_id = e.id WHERE e.type = 'deposit.created'`); n != 1 {
		t.Errorf("the deposit's event, which its dead delivery needs, is gone")
	}
	if got := r.Metric(t, "safeflow_outbox_purged_total", "kind", "delivered"); got != 2 {
		t.Errorf("purged delivered = %v, want 2", got)
	}
	if got := r.Metric(t, "safeflow_webhook_dead"); got != 1 {
		t.Errorf("dead gauge = %v, want 1", got)
	}
}

// TestOutcomesOutliveAShortOutage loses the database for a second while
// every attempt has just been answered: the relay keeps the finished
// outcomes until it can record them (their leases have not passed), so no
// event is sent twice.
func TestOutcomesOutliveAShortOutage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	release := make(chan struct{})
	rc := relaytest.NewReceiver(t, func(relaytest.Hit, http.ResponseWriter, *http.Request) { <-release })
	f.endpoint(t, rc.URL)
	a := f.account(t)
	for range 9 {
		f.deposit(t, a.ID, 1)
	}
	proxy, relayPool := faultproxy.Around(t, f.pool)
	r := relaytest.StartRelay(t, relayPool, func(c *relay.Config) { c.Lease = 5 * time.Second; c.DeliveryTimeout = 3 * time.Second })
	relaytest.Eventually(t, "all ten attempts under way", func() bool { return len(rc.Got()) == 10 })

	proxy.Cut()
	close(release) // every attempt succeeds while the relay cannot reach the database
	time.Sleep(time.Second)
	proxy.Restore()

	relaytest.Eventually(t, "all delivered", func() bool { return len(f.withStatus(t, domain.DeliveryDelivered)) == 10 })
	for id, n := range rc.PerID() {
		if n != 1 {
			t.Errorf("event %s was sent %d times", id, n)
		}
	}
	if n := r.Metric(t, "safeflow_relay_errors_total", "op", "record"); n < 1 {
		t.Errorf("safeflow_relay_errors_total{op=record} = %v after failed records", n)
	}
}
