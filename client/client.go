package client

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/safeflow/safeflow/internal/backoff"
)

// Client calls a safeflow API the way a careful caller should: every
// intended change gets a fresh Idempotency-Key, made once and sent again on
// every retry; transient failures (a 5xx, a 409 idempotency_key_in_use, a
// network error) are retried with capped exponential backoff and full
// jitter, waiting at least what Retry-After asks; an outcome still unknown
// after the last try can be resolved with Lookup.
type Client struct {
	BaseURL     string       // e.g. http://localhost:8080
	APIKey      string       // sk_…
	HTTP        *http.Client // default: 30 s timeout
	MaxAttempts int          // tries per change (default 6)
	BackoffBase time.Duration
	BackoffMax  time.Duration
}

// New returns a Client with the defaults: 6 tries, backoff from 100 ms up
// to 5 s.
func New(baseURL, apiKey string) *Client {
	return &Client{BaseURL: strings.TrimSuffix(baseURL, "/"), APIKey: apiKey, HTTP: &http.Client{Timeout: 30 * time.Second},
		MaxAttempts: 6, BackoffBase: 100 * time.Millisecond, BackoffMax: 5 * time.Second}
}

// Response is a 2xx answer.
type Response struct {
	Status         int
	Header         http.Header
	Body           []byte
	Replayed       bool   // Idempotent-Replayed: true
	IdempotencyKey string // the key the change was sent under
	Attempts       int
}

// Problem is an RFC 9457 answer of the API that retrying will not change
// (or the last of a change's tries).
type Problem struct {
	Status   int    `json:"status"`
	Type     string `json:"type"`
	Title    string `json:"title"`
	Detail   string `json:"detail"`
	Code     string `json:"code"`
	Instance string `json:"instance"`
	// IdempotencyKey is the key of the change it answers, to Lookup.
	IdempotencyKey string `json:"-"`
}

func (p *Problem) Error() string {
	return fmt.Sprintf("safeflow: %d %s: %s", p.Status, p.Code, p.Detail)
}

// ErrOutcomeUnknown wraps the last error of a change whose every try failed
// in a way that leaves its effect unknown (no answer, or 503
// outcome_unknown): Lookup(key) tells whether it was applied, and a later
// Post with the same key (PostWithKey) finishes it exactly once.
var ErrOutcomeUnknown = errors.New("safeflow: the outcome of the change is unknown")

// Post sends one intended change to path with body (JSON) under a fresh
// Idempotency-Key and decodes a 2xx answer into out (if not nil).
func (c *Client) Post(ctx context.Context, path string, body, out any) (*Response, error) {
	return c.PostWithKey(ctx, NewKey(), path, body, out)
}

// PostWithKey is Post under the caller's key: the way to finish a change
// whose outcome was unknown.
func (c *Client) PostWithKey(ctx context.Context, key, path string, body, out any) (*Response, error) {
	payload, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	var last error
	unknown := false
	for attempt := 1; ; attempt++ {
		res, retryAfter, err := c.send(ctx, http.MethodPost, path, key, payload)
		if err == nil {
			res.IdempotencyKey, res.Attempts = key, attempt
			if out != nil {
				if err := json.Unmarshal(res.Body, out); err != nil {
					return res, err
				}
			}
			return res, nil
		}
		var p *Problem
		switch {
		case errors.As(err, &p):
			p.IdempotencyKey = key
			if !retryable(p) {
				return nil, p
			}
			unknown = p.Code == "outcome_unknown" || unknown && p.Status >= 500
		case ctx.Err() != nil:
			return nil, ctx.Err()
		default: // no answer: the change may or may not have happened
			unknown = true
		}
		last = err
		if attempt >= c.MaxAttempts {
			if unknown {
				return nil, fmt.Errorf("%w (Idempotency-Key %q, %d tries): %w", ErrOutcomeUnknown, key, attempt, last)
			}
			return nil, last
		}
		if err := backoff.Sleep(ctx, max(backoff.FullJitter(c.BackoffBase, c.BackoffMax, attempt), retryAfter)); err != nil {
			return nil, err
		}
	}
}

// retryable: the same request may get another answer later.
func retryable(p *Problem) bool {
	return p.Status >= 500 || p.Status == http.StatusConflict && p.Code == "idempotency_key_in_use" || p.Status == http.StatusTooManyRequests
}

// Get reads path and decodes a 2xx answer into out.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	res, _, err := c.send(ctx, http.MethodGet, path, "", nil)
	if err != nil {
		return err
	}
	return json.Unmarshal(res.Body, out)
}

// KeyState is what the API knows of a request sent under a key.
type KeyState struct {
	Key            string `json:"key"`
	Status         string `json:"status"` // in_progress or completed
	ResponseStatus *int   `json:"response_status"`
}

// Lookup asks what became of the change sent under key: completed (with the
// status it answered: a retry under the key replays it), in_progress (retry
// shortly), or a *Problem with code not_found when nothing was applied under
// it (retrying under the key applies it once).
func (c *Client) Lookup(ctx context.Context, key string) (KeyState, error) {
	var k KeyState
	err := c.Get(ctx, "/v1/idempotency-keys/"+url.PathEscape(key), &k)
	return k, err
}

// send makes one request. A non-2xx answer is a *Problem (with Retry-After
// returned); no answer is the transport's error.
func (c *Client) send(ctx context.Context, method, path, key string, body []byte) (*Response, time.Duration, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, rd)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.APIKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return nil, 0, err
	}
	if res.StatusCode/100 == 2 {
		return &Response{Status: res.StatusCode, Header: res.Header, Body: b, Replayed: res.Header.Get("Idempotent-Replayed") == "true"}, 0, nil
	}
	p := &Problem{Status: res.StatusCode}
	_ = json.Unmarshal(b, p)
	p.Status = res.StatusCode
	var wait time.Duration
	if s, err := strconv.Atoi(strings.TrimSpace(res.Header.Get("Retry-After"))); err == nil && s > 0 {
		wait = time.Duration(s) * time.Second
	}
	return nil, wait, p
}

// NewKey is a fresh Idempotency-Key (a random UUID): one per intended change.
func NewKey() string {
	b := make([]byte, 16)
	if _, err := cryptoRead(b); err != nil {
		panic("client: crypto/rand failed: " + err.Error())
	}
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

var cryptoRead = crand.Read
