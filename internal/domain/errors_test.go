package domain

import (
	"net/http"
	"testing"
)

// Every kind has its row in the table: a forgotten row would answer status 0.
func TestEveryKindHasARow(t *testing.T) {
	t.Parallel()
	for k := KindInternal; k < numKinds; k++ {
		if k.Status() < 400 || k.Status() > 599 {
			t.Errorf("kind %d has status %d, want an error status", k, k.Status())
		}
	}
}

// Only the domain's answers to the request itself are stored: 404, 409 and
// 422, but not the 409 and 422 that are about the key.
func TestStoredKinds(t *testing.T) {
	t.Parallel()
	for k := KindInternal; k < numKinds; k++ {
		want := (k.Status() == http.StatusNotFound || k.Status() == http.StatusConflict || k.Status() == http.StatusUnprocessableEntity) &&
			k != KindKeyInUse && k != KindKeyReused
		if k.Stored() != want {
			t.Errorf("kind %d (status %d): stored %v, want %v", k, k.Status(), k.Stored(), want)
		}
	}
	if KindKeyInUse.RetryAfter() == 0 || KindUnavailable.RetryAfter() == 0 {
		t.Error("409 idempotency_key_in_use and 503 must carry Retry-After")
	}
}
