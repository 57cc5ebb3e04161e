package relay

import (
	"net/http"
	"testing"
	"time"

	"github.com/safeflow/safeflow/internal/domain"
)

// The Standard Webhooks reference vector, as published with the spec's
// libraries: a receiver's stock library verifies what we send.
func TestSignStandardWebhooksVector(t *testing.T) {
	t.Parallel()
	got, err := Sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; err != nil || got != want {
		t.Errorf("Sign = %q, %v; want %q", got, err, want)
	}
	if _, err := Sign("whsec_not base64!", "x", 1, nil); err == nil {
		t.Error("a secret that is not base64 signs")
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":     0,
		"120":  2 * time.Minute,
		" 5 ":  5 * time.Second,
		"0":    0,
		"-3":   0,
		"soon": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):       0,
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("retryAfter(%q) = %s, want %s", v, got, want)
		}
	}
}

func TestRetrySchedule(t *testing.T) {
	t.Parallel()
	r := New(nil, Config{MaxAttempts: 3, BackoffBase: time.Second, BackoffMax: time.Minute})
	o := r.retry(outcome{}, 1, "HTTP 500", 10*time.Minute)
	if o.status != domain.DeliveryPending || o.next.Sub(o.at) != time.Minute {
		t.Errorf("Retry-After beyond the maximum: %+v, want pending after RELAY_BACKOFF_MAX", o)
	}
	o = r.retry(outcome{}, 2, "HTTP 500", 0)
	if o.status != domain.DeliveryPending || o.next.Sub(o.at) > 2*time.Second {
		t.Errorf("second failure: %+v, want pending within 2 s", o)
	}
	o = r.retry(outcome{}, 3, "HTTP 500", 0)
	if o.status != domain.DeliveryDead || o.next != nil || *o.lastError != "HTTP 500 (attempt 3 of 3: no more attempts)" {
		t.Errorf("last attempt: %+v, want dead", o)
	}
}
