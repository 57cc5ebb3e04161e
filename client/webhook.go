// Package client is for programs that call safeflow: a Client that makes
// each change exactly once through retries (client.go), and the check of a
// webhook delivery's signature (Standard Webhooks). It needs nothing but the
// standard library and safeflow's retry schedule.
package client

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ErrSignature is VerifyWebhook's answer to a delivery it cannot trust.
var ErrSignature = errors.New("client: the webhook signature does not verify")

// WebhookTolerance is how far a delivery's webhook-timestamp may be from
// now (replayed or delayed deliveries older than this are refused).
const WebhookTolerance = 5 * time.Minute

// VerifyWebhook checks a delivery as Standard Webhooks specifies: one of the
// signatures in webhook-signature ("v1,<base64>", space-separated: during a
// secret rotation safeflow sends two) must be the HMAC-SHA256, keyed with
// the base64-decoded part of secret ("whsec_…"), of
// "<webhook-id>.<webhook-timestamp>.<body>", and the timestamp must be
// within WebhookTolerance of now. It returns the webhook-id (the event id:
// dedupe on it) when the delivery is genuine.
func VerifyWebhook(secret string, header http.Header, body []byte, now time.Time) (string, error) {
	id, ts, sigs := header.Get("webhook-id"), header.Get("webhook-timestamp"), header.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return "", errors.New("client: webhook-id, webhook-timestamp or webhook-signature is missing")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "", errors.New("client: webhook-timestamp is not Unix seconds")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > WebhookTolerance || d < -WebhookTolerance {
		return "", errors.New("client: webhook-timestamp is too far from now")
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || len(key) == 0 {
		return "", errors.New("client: a webhook secret is whsec_ followed by base64")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, sig := range strings.Fields(sigs) {
		b64, ok := strings.CutPrefix(sig, "v1,")
		got, err := base64.StdEncoding.DecodeString(b64)
		if ok && err == nil && hmac.Equal(got, want) {
			return id, nil
		}
	}
	return "", ErrSignature
}
