package http_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"
)

type idempotencyKey struct {
	Object         string     `json:"object"`
	Key            string     `json:"key"`
	Status         string     `json:"status"`
	Method         *string    `json:"method"`
	Path           *string    `json:"path"`
	ResponseStatus *int       `json:"response_status"`
	CreatedAt      *time.Time `json:"created_at"`
	ExpiresAt      *time.Time `json:"expires_at"`
}

// GET /v1/idempotency-keys/{key}: a client that lost an answer learns what
// became of its request without sending it again.
func TestIdempotencyKeyLookup(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a := h.mustAccount(t, "USD")
	deposits := "/v1/accounts/" + a.ID + "/deposits"
	lookup := func(key string) response { return h.get(t, "/v1/idempotency-keys/"+url.PathEscape(key)) }

	before := time.Now().Add(-time.Second)
	h.post(t, deposits, "order/42 #1", `{"amount":5}`).want(t, http.StatusCreated)
	var k idempotencyKey
	lookup("order/42 #1").want(t, http.StatusOK).decode(t, &k)
	if k.Object != "idempotency_key" || k.Key != "order/42 #1" || k.Status != "completed" ||
		k.Method == nil || *k.Method != "POST" || k.Path == nil || *k.Path != deposits ||
		k.ResponseStatus == nil || *k.ResponseStatus != 201 || k.CreatedAt == nil || k.CreatedAt.Before(before) ||
		k.ExpiresAt == nil || k.ExpiresAt.Sub(*k.CreatedAt) < 23*time.Hour {
		t.Errorf("completed key = %+v", k)
	}

	// A stored refusal is completed with its status.
	h.post(t, "/v1/accounts/"+a.ID+"/withdrawals", "too-much", `{"amount":500}`).wantProblem(t, http.StatusUnprocessableEntity, "insufficient_funds")
	lookup("too-much").want(t, http.StatusOK).decode(t, &k)
	if k.Status != "completed" || k.ResponseStatus == nil || *k.ResponseStatus != 422 {
		t.Errorf("refused key = %+v, want completed with 422", k)
	}

	// Refused before the transaction (not stored), never sent, another
	// tenant's, expired: no such live key.
	h.post(t, deposits, "bad-body", `{"amount":0}`).wantProblem(t, http.StatusBadRequest, "invalid_request")
	lookup("bad-body").wantProblem(t, http.StatusNotFound, "not_found")
	lookup("never-sent").wantProblem(t, http.StatusNotFound, "not_found")
	other := &harness{pool: h.pool, store: h.store, url: h.url, key: h.newKey(t, "globex")}
	other.get(t, "/v1/idempotency-keys/"+url.PathEscape("order/42 #1")).wantProblem(t, http.StatusNotFound, "not_found")
	if _, err := h.pool.Exec(context.Background(), `UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'too-much'`); err != nil {
		t.Fatal(err)
	}
	lookup("too-much").wantProblem(t, http.StatusNotFound, "not_found")

	// A request still running: in progress, with only its claim known.
	g := h.holdAtGate(t, "running")
	done := make(chan response, 1)
	go func() { done <- h.post(t, deposits, "running", `{"amount":1}`) }()
	g.WaitHeld(t, 1)
	lookup("running").want(t, http.StatusOK).decode(t, &k)
	if k.Status != "in_progress" || k.ResponseStatus != nil {
		t.Errorf("running key = %+v, want in_progress", k)
	}
	g.Open(t)
	(<-done).want(t, http.StatusCreated)
	lookup("running").want(t, http.StatusOK).decode(t, &k)
	if k.Status != "completed" {
		t.Errorf("finished key = %+v, want completed", k)
	}
	if n := h.count(t, "idempotency_keys"); n != 4 { // the account's, the deposits', the refusal's
		t.Errorf("%d idempotency records after the lookups, want 4: a lookup must claim nothing", n)
	}
}
