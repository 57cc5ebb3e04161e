package client

import (
	"errors"
	"net/http"
	"testing"
	"time"
)

// The Standard Webhooks reference vector, alone and as the second of two
// signatures (a rotation), is accepted; a wrong secret, a changed body and
// an old timestamp are not.
func TestVerifyWebhook(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	body := []byte(`{"test": 2432232314}`)
	at := time.Unix(1614265330, 0)
	header := func(sig string) http.Header {
		h := http.Header{}
		h.Set("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
		h.Set("webhook-timestamp", "1614265330")
		h.Set("webhook-signature", sig)
		return h
	}
	const vector = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	for _, sig := range []string{vector, "v1,bm90IHRoaXMgb25l " + vector} {
		if id, err := VerifyWebhook(secret, header(sig), body, at.Add(time.Minute)); err != nil || id != "msg_p5jXN8AQM9LWM0D4loKWxJek" {
			t.Errorf("signature %q: %q, %v; want the webhook-id", sig, id, err)
		}
	}
	if _, err := VerifyWebhook("whsec_"+"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", header(vector), body, at); !errors.Is(err, ErrSignature) {
		t.Errorf("another secret: %v, want ErrSignature", err)
	}
	if _, err := VerifyWebhook(secret, header(vector), []byte(`{"test": 1}`), at); !errors.Is(err, ErrSignature) {
		t.Errorf("a changed body: %v, want ErrSignature", err)
	}
	if _, err := VerifyWebhook(secret, header(vector), body, at.Add(time.Hour)); err == nil {
		t.Error("a delivery an hour old verifies")
	}
	if _, err := VerifyWebhook(secret, http.Header{}, body, at); err == nil {
		t.Error("a request without the headers verifies")
	}
}
