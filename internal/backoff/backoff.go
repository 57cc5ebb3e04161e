// Package backoff is the one retry schedule of safeflow: capped exponential
// backoff with full jitter, used by the safe flow's transaction retries and
// by the webhook relay.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// FullJitter returns the delay after the given failed attempt (1-based):
// uniform in [0, min(max, base·2^(attempt-1))].
func FullJitter(base, max time.Duration, attempt int) time.Duration {
	ceil := base << min(attempt-1, 30)
	if ceil > max || ceil <= 0 {
		ceil = max
	}
	return time.Duration(rand.Int64N(int64(ceil) + 1))
}

// Sleep waits for d or until ctx ends, whichever is first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
