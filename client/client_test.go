package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// A scripted server stands for the API: the client sends the same key on
// every try, waits what Retry-After asks, retries 409
// idempotency_key_in_use and 5xx, and never retries a refusal.
func TestPostRetriesUnderOneKey(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	var at []time.Time
	answers := []func(w http.ResponseWriter){
		func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(503)
			_, _ = w.Write([]byte(`{"status":503,"code":"service_unavailable"}`))
		},
		func(w http.ResponseWriter) {
			w.WriteHeader(409)
			_, _ = w.Write([]byte(`{"status":409,"code":"idempotency_key_in_use"}`))
		},
		func(w http.ResponseWriter) { w.WriteHeader(201); _, _ = w.Write([]byte(`{"id":"dep_1"}`)) },
		func(w http.ResponseWriter) {
			w.WriteHeader(422)
			_, _ = w.Write([]byte(`{"status":422,"code":"insufficient_funds","detail":"no"}`))
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		keys, at = append(keys, r.Header.Get("Idempotency-Key")), append(at, time.Now())
		answers[min(len(keys), len(answers))-1](w)
	}))
	defer srv.Close()
	c := New(srv.URL, "sk_test")
	c.BackoffBase, c.BackoffMax = time.Millisecond, 10*time.Millisecond
	var out struct{ ID string }
	res, err := c.Post(context.Background(), "/v1/x", map[string]int{"amount": 1}, &out)
	if err != nil || res.Status != 201 || res.Attempts != 3 || out.ID != "dep_1" {
		t.Fatalf("Post = %+v, %v; want the 201 on the third try", res, err)
	}
	if keys[0] == "" || keys[0] != keys[1] || keys[1] != keys[2] || res.IdempotencyKey != keys[0] {
		t.Errorf("keys sent %v (answer under %q); want one key on every try", keys, res.IdempotencyKey)
	}
	if d := at[1].Sub(at[0]); d < time.Second {
		t.Errorf("the second try came %v after a Retry-After: 1", d)
	}
	_, err = c.Post(context.Background(), "/v1/x", map[string]int{"amount": 1}, nil)
	var p *Problem
	if !errors.As(err, &p) || p.Code != "insufficient_funds" || len(keys) != 4 || keys[3] == keys[0] {
		t.Errorf("a refusal: %v after %d requests; want it once, under a new key", err, len(keys))
	}
}
