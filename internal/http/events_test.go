package http_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/safeflow/safeflow/internal/testdb"
)

type event struct {
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	AggregateType string          `json:"aggregate_type"`
	AggregateID   string          `json:"aggregate_id"`
	Sequence      int64           `json:"sequence"`
	Data          json.RawMessage `json:"data"`
}

// feed reads one page of the event feed.
func (h *harness) feed(t *testing.T, query url.Values) ([]event, *string) {
	t.Helper()
	var l struct {
		Data       []event `json:"data"`
		NextCursor *string `json:"next_cursor"`
	}
	h.get(t, "/v1/events?"+query.Encode()).want(t, http.StatusOK).decode(t, &l)
	return l.Data, l.NextCursor
}

// walk follows the feed from after ("" = the start) in pages of limit until
// it has n events or a deadline passes. Events only show once every older
// transaction of the cluster has finished, and other tests run
// transactions in parallel, so it polls.
func (h *harness) walk(t *testing.T, after string, limit, n int) []event {
	t.Helper()
	var seen []event
	deadline := time.Now().Add(15 * time.Second)
	for len(seen) < n && time.Now().Before(deadline) {
		q := url.Values{"limit": {itoa(int64(limit))}}
		if after != "" {
			q.Set("after", after)
		}
		page, _ := h.feed(t, q)
		if len(page) == 0 {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		seen = append(seen, page...)
		after = page[len(page)-1].ID
	}
	return seen
}

func types(es []event) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Type+" "+e.AggregateID+" #"+itoa(e.Sequence))
	}
	return out
}

func TestEventFeed(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b := h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 100)
	p := h.mustPayment(t, a.ID, b.ID, 60)
	h.mustTransition(t, p.ID, "confirm")

	got := h.walk(t, "", 2, 5)
	var dep string
	if err := h.pool.QueryRow(context.Background(), `SELECT id FROM movements`).Scan(&dep); err != nil {
		t.Fatal(err)
	}
	want := []string{"account.created " + a.ID + " #1", "account.created " + b.ID + " #1", "deposit.created " + dep + " #1",
		"payment.created " + p.ID + " #1", "payment.confirmed " + p.ID + " #2"}
	if diff := cmp.Diff(want, types(got)); diff != "" {
		t.Fatalf("feed (-want +got):\n%s", diff)
	}
	var confirmed payment
	if err := json.Unmarshal(got[4].Data, &confirmed); err != nil || confirmed.Status != "confirmed" || confirmed.Version != 2 {
		t.Errorf("payment.confirmed data = %s (%v), want the payment after the change", got[4].Data, err)
	}
	// The feed serves the stored envelope bytes, as webhooks will.
	var stored []byte
	if err := h.pool.QueryRow(context.Background(), `SELECT payload FROM events WHERE id = $1`, got[0].ID).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	raw := h.get(t, "/v1/events?limit=1").want(t, http.StatusOK)
	var l struct{ Data []json.RawMessage }
	raw.decode(t, &l)
	if len(l.Data) != 1 || string(l.Data[0]) != string(stored) {
		t.Errorf("feed item = %s, want the stored envelope %s", l.Data, stored)
	}

	// Caught up: an empty page and no cursor. The cursor of a full page names
	// its last event.
	page, next := h.feed(t, url.Values{"after": {got[4].ID}})
	if len(page) != 0 || next != nil {
		t.Errorf("after the last event: %d events, next %v", len(page), next)
	}
	page, next = h.feed(t, url.Values{"limit": {"3"}})
	if next == nil || len(page) != 3 {
		t.Fatalf("first page of 3: %d events, next %v", len(page), next)
	}
	rest, _ := h.feed(t, url.Values{"cursor": {*next}})
	if diff := cmp.Diff(want[3:], types(rest)); diff != "" {
		t.Errorf("page after the cursor (-want +got):\n%s", diff)
	}

	// Another tenant sees none of it and cannot start after acme's events.
	other := &harness{pool: h.pool, store: h.store, url: h.url, key: h.newKey(t, "globex")}
	if page, _ := other.feed(t, nil); len(page) != 0 {
		t.Errorf("globex sees %d of acme's events", len(page))
	}
	other.get(t, "/v1/events?after="+got[0].ID).wantProblem(t, http.StatusBadRequest, "invalid_request")
	h.get(t, "/v1/events?after=dep_x").wantProblem(t, http.StatusBadRequest, "invalid_request")
	h.get(t, "/v1/events?limit=101").wantProblem(t, http.StatusBadRequest, "invalid_request")
}

// The gap test. A deposit's transaction inserts its event (taking the lower
// position) and is held open before it commits, while three other deposits
// commit events with higher positions. A feed reading "position > last
// seen" would serve those three, move its cursor past the held event, and
// skip it when it commits. This feed serves nothing younger than the held
// transaction until it finishes, and a client walking it with after= sees
// every event exactly once.
func TestEventFeedNeverSkipsALateCommit(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	a, b := h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	before := h.walk(t, "", 100, 2)
	if len(before) != 2 {
		t.Fatalf("set-up: %d events in the feed, want 2", len(before))
	}

	// Hold the transaction of the request with key "slow" after its writes,
	// right before it stores its response, until the gate opens.
	g := h.holdAtGate(t, "slow")
	slow := make(chan response, 1)
	go func() { slow <- h.post(t, "/v1/accounts/"+a.ID+"/deposits", "slow", `{"amount":5}`) }()
	g.WaitHeld(t, 1)
	for range 3 {
		h.mustDeposit(t, b.ID, 1)
	}
	var committed int
	if err := h.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE type = 'deposit.created'`).Scan(&committed); err != nil {
		t.Fatal(err)
	}
	if committed != 3 {
		t.Fatalf("set-up: %d deposit events committed, want the 3 fast ones", committed)
	}
	// A client reads the feed meanwhile and moves its cursor past what it got.
	cursor := before[1].ID
	during, _ := h.feed(t, url.Values{"after": {cursor}})
	if len(during) != 0 {
		t.Errorf("while an older transaction is open, the feed served %v", types(during))
		cursor = during[len(during)-1].ID
	}

	g.Open(t)
	(<-slow).want(t, http.StatusCreated)

	// The held event took its position before the three others: the case a
	// position cursor gets wrong.
	var heldFirst bool
	if err := h.pool.QueryRow(ctx, `
		SELECT (SELECT position FROM events e JOIN movements m ON m.id = e.aggregate_id WHERE m.account_id = $1)
		     < (SELECT min(position) FROM events e JOIN movements m ON m.id = e.aggregate_id WHERE m.account_id = $2)`,
		a.ID, b.ID).Scan(&heldFirst); err != nil {
		t.Fatal(err)
	}
	if !heldFirst {
		t.Fatal("set-up: the held deposit's event does not have the lowest position")
	}

	after := h.walk(t, cursor, 1, 4-len(during))
	all := append(append(before, during...), after...)
	var ids []string
	for _, e := range all {
		ids = append(ids, e.ID)
	}
	rows, err := h.pool.Query(ctx, `SELECT id FROM events ORDER BY feed_xid, position`)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	if diff := cmp.Diff(want, ids); diff != "" {
		t.Errorf("the walk did not see every event exactly once (-want +got):\n%s", diff)
	}
	if _, err := h.pool.Exec(ctx, `DROP TRIGGER hold_at_gate ON idempotency_keys`); err != nil {
		t.Fatal(err)
	}
}

// Settle and refund of one confirmed payment sent at the same instant, on
// many payments. Whichever takes the payment's row lock second applies
// second (or is refused), so where both applied the payment ends refunded,
// and the feed must serve payment.settled (sequence 3) before
// payment.refunded (sequence 4): a consumer projecting the status in feed
// order must end where the payment is.
func TestEventFeedServesEachAggregateInSequenceOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const n = 100
	a, b := h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, n*10)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = h.mustPayment(t, a.ID, b.ID, 10).ID
		h.mustTransition(t, ids[i], "confirm")
	}

	start := make(chan struct{})
	done := make(chan response, 2*n)
	for _, id := range ids {
		for _, action := range []string{"settle", "refund"} {
			go func() {
				<-start
				done <- h.post(t, "/v1/payments/"+id+"/"+action, newKey(), ``)
			}()
		}
	}
	close(start)
	for range 2 * n {
		if r := <-done; r.status != http.StatusOK && r.status != http.StatusConflict {
			t.Errorf("a racing transition answered %d: %s", r.status, r.body)
		}
	}

	total := h.count(t, "events")
	served := h.walk(t, "", 100, total)
	if len(served) != total {
		t.Fatalf("the feed served %d of %d events", len(served), total)
	}
	last := map[string]int64{}
	status := map[string]string{}
	both := 0
	for _, e := range served {
		key := e.AggregateType + " " + e.AggregateID
		if e.Sequence != last[key]+1 {
			t.Errorf("%s: the feed served sequence %d (%s) after %d", key, e.Sequence, e.Type, last[key])
		}
		last[key] = e.Sequence
		if e.AggregateType == "payment" {
			var p payment
			if err := json.Unmarshal(e.Data, &p); err != nil {
				t.Fatal(err)
			}
			status[p.ID] = p.Status
			if e.Sequence == 4 {
				both++
			}
		}
	}
	for _, id := range ids {
		var p payment
		h.get(t, "/v1/payments/"+id).want(t, http.StatusOK).decode(t, &p)
		if status[id] != p.Status {
			t.Errorf("payment %s is %s; projecting the feed in order ends at %s", id, p.Status, status[id])
		}
	}
	var inherited int
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE feed_xid > xid`).Scan(&inherited); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of %d payments had both settle and refund applied; %d events sort after their writer's xid", both, n, inherited)
}

// On a cluster nothing else uses, a poller that has caught up sees every
// committed event on its next read, with no other transaction needed to
// move the snapshot's xmin: a feed key is always an xid that has finished
// when its event commits, even when it is inherited from the aggregate's
// previous event (settle and refund racing).
func TestCaughtUpPollerOnAnIdleDatabaseSeesEventsAtOnce(t *testing.T) {
	t.Parallel()
	pool := testdb.Private(t)
	h := startHarness(t, pool, pool)
	a, b := h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 1000)
	readAll := func() []event { // no waiting: each page once, until one is empty
		var all []event
		after := ""
		for {
			q := url.Values{"limit": {"100"}}
			if after != "" {
				q.Set("after", after)
			}
			page, _ := h.feed(t, q)
			if len(page) == 0 {
				return all
			}
			all = append(all, page...)
			after = page[len(page)-1].ID
		}
	}
	for round := range 5 {
		ids := make([]string, 10)
		for i := range ids {
			ids[i] = h.mustPayment(t, a.ID, b.ID, 10).ID
			h.mustTransition(t, ids[i], "confirm")
		}
		done := make(chan response, 2*len(ids))
		for _, id := range ids {
			for _, action := range []string{"settle", "refund"} {
				go func() { done <- h.post(t, "/v1/payments/"+id+"/"+action, newKey(), ``) }()
			}
		}
		for range 2 * len(ids) {
			<-done
		}
		if got, want := len(readAll()), h.count(t, "events"); got != want {
			t.Fatalf("round %d: right after the last answer the feed serves %d of %d events", round, got, want)
		}
	}
	var inherited int
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE feed_xid > xid`).Scan(&inherited); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events inherited their aggregate's key", inherited)
}
