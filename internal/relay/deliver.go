package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/safeflow/safeflow/internal/backoff"
	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/netguard"
)

// deliver makes one attempt, outside any transaction, and returns its
// outcome: delivered, pending again (with the time of the next attempt), or
// dead.
func (r *Relay) deliver(ctx context.Context, d claimed) outcome {
	o := outcome{id: d.ID, endpointID: d.EndpointID, lease: d.Lease, leaseEnd: d.leaseEnd, eventCreatedAt: d.EventCreatedAt}
	if d.EndpointStatus != domain.EndpointEnabled {
		r.cfg.Metrics.attempted("skipped")
		return r.dead(o, "not sent: the endpoint is disabled (by PATCH, or after it answered 410 Gone); enable it, then replay its dead deliveries")
	}
	ctx, cancel := context.WithDeadline(ctx, d.deadline)
	defer cancel()
	ts := time.Now().Unix()
	sig, err := Sign(d.Secret, d.EventID, ts, d.Payload)
	if err != nil {
		return r.dead(o, err.Error())
	}
	if d.PreviousSecret != nil { // during a rotation, both: a receiver that knows either verifies it
		prev, err := Sign(*d.PreviousSecret, d.EventID, ts, d.Payload)
		if err != nil {
			return r.dead(o, err.Error())
		}
		sig += " " + prev
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(d.Payload))
	if err != nil {
		return r.dead(o, "the endpoint URL cannot be requested: "+err.Error())
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "safeflow-webhooks/1")
	h.Set("webhook-id", d.EventID)
	h.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	h.Set("webhook-signature", sig)
	res, err := r.client.Do(req)
	if err != nil {
		result, msg := describe(err, r.cfg.DeliveryTimeout)
		r.cfg.Metrics.attempted(result)
		return r.retry(o, d.Attempts, msg, 0)
	}
	snippet, _ := io.ReadAll(io.LimitReader(res.Body, 256))
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10)) // lets the connection be reused
	_ = res.Body.Close()
	code := res.StatusCode
	o.code = &code
	r.cfg.Metrics.attempted(strconv.Itoa(code/100) + "xx")
	msg := fmt.Sprintf("HTTP %d", code)
	if s := strings.TrimSpace(strings.ToValidUTF8(string(snippet), "")); s != "" {
		msg += ": " + s
	}
	switch {
	case code >= 200 && code < 300:
		o.status, o.at = domain.DeliveryDelivered, time.Now()
		return o
	case code == http.StatusGone:
		o.gone = true
		return r.dead(o, msg+" (410 Gone: the endpoint is now disabled)")
	}
	return r.retry(o, d.Attempts, msg, retryAfter(res.Header.Get("Retry-After"), time.Now()))
}

func (r *Relay) dead(o outcome, msg string) outcome {
	o.status, o.lastError, o.at = domain.DeliveryDead, &msg, time.Now()
	return o
}

// retry schedules the next attempt after a failed one (capped exponential
// backoff with full jitter, or the receiver's Retry-After), or makes the
// delivery dead when it has had its attempts.
func (r *Relay) retry(o outcome, attempts int, msg string, after time.Duration) outcome {
	if attempts >= r.cfg.MaxAttempts {
		return r.dead(o, fmt.Sprintf("%s (attempt %d of %d: no more attempts)", msg, attempts, r.cfg.MaxAttempts))
	}
	delay := backoff.FullJitter(r.cfg.BackoffBase, r.cfg.BackoffMax, attempts)
	if after > 0 {
		delay = min(after, r.cfg.BackoffMax)
	}
	o.status, o.lastError, o.at = domain.DeliveryPending, &msg, time.Now()
	next := o.at.Add(delay)
	o.next = &next
	return o
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// describe names a failed request for last_error and the attempts metric.
func describe(err error, timeout time.Duration) (result, msg string) {
	var ne net.Error
	switch {
	case errors.Is(err, netguard.ErrNotPublic):
		return "refused", "not sent: " + unwrapURL(err).Error()
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return "timeout", fmt.Sprintf("no answer within %s", timeout)
	}
	return "network_error", unwrapURL(err).Error()
}

func unwrapURL(err error) error {
	if u := (*url.Error)(nil); errors.As(err, &u) {
		return u.Err
	}
	return err
}
