package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBackoffIsCappedFullJitter(t *testing.T) {
	t.Parallel()
	base, ceiling := time.Second, time.Minute
	for attempt := 1; attempt <= 40; attempt++ {
		cap := min(ceiling, base<<min(attempt-1, 30))
		var sawLow, sawHigh bool
		for i := 0; i < 2000; i++ {
			d := FullJitter(base, ceiling, attempt)
			if d < 0 || d > cap {
				t.Fatalf("attempt %d: delay %s outside [0, %s]", attempt, d, cap)
			}
			sawLow = sawLow || d < cap/4
			sawHigh = sawHigh || d > cap*3/4
		}
		if !sawLow || !sawHigh {
			t.Errorf("attempt %d: delays do not spread over [0, %s] (full jitter)", attempt, cap)
		}
	}
}

func TestSleepEndsWithItsContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep on a cancelled context = %v, want context.Canceled", err)
	}
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Errorf("Sleep = %v", err)
	}
}
