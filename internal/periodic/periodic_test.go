package periodic

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/safeflow/safeflow/internal/promtest"
)

// A job runs at once, then again every interval, failed runs included;
// each run is counted by result, and Stop ends a run in progress and waits
// for it.
func TestJobsRunAtStartThenEveryIntervalUntilStop(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	var ok, failing atomic.Int64
	blocked := make(chan struct{})
	var stoppedMidRun atomic.Bool
	r := Start(context.Background(), zerolog.Nop(), NewMetrics(reg),
		Job{Name: "ok", Every: 10 * time.Millisecond, Run: func(ctx context.Context) (int64, error) {
			if ok.Add(1) == 5 { // the fifth run is still going when Stop comes
				close(blocked)
				<-ctx.Done()
				stoppedMidRun.Store(true)
			}
			return 1, nil
		}},
		Job{Name: "failing", Every: 10 * time.Millisecond, Run: func(context.Context) (int64, error) {
			failing.Add(1)
			return 0, errors.New("database unreachable")
		}},
		Job{Name: "hourly", Every: time.Hour, Run: func(context.Context) (int64, error) { return 0, nil }},
	)
	select {
	case <-blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("the job did not run five times")
	}
	for failing.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	r.Stop()
	if !stoppedMidRun.Load() {
		t.Error("Stop returned before the run in progress saw its context end")
	}
	n := ok.Load()
	time.Sleep(30 * time.Millisecond)
	if ok.Load() != n {
		t.Error("a job ran after Stop")
	}
	for _, c := range []struct {
		job, result string
		want        float64
	}{{"ok", "ok", 4}, {"ok", "error", 0}, {"failing", "ok", 0}, {"hourly", "ok", 1}} {
		if got := promtest.Value(t, reg, "safeflow_job_runs_total", "job", c.job, "result", c.result); got != c.want {
			t.Errorf("runs{job=%s,result=%s} = %v, want %v (the stopped run counts neither way)", c.job, c.result, got, c.want)
		}
	}
	if got := promtest.Value(t, reg, "safeflow_job_runs_total", "job", "failing", "result", "error"); got < 3 {
		t.Errorf("runs{job=failing,result=error} = %v, want at least 3: a failed run is retried at the next interval", got)
	}
	if got := promtest.Value(t, reg, "safeflow_job_last_success_timestamp_seconds", "job", "failing"); got != 0 {
		t.Errorf("last success of a job that never succeeded = %v, want 0", got)
	}
	if got := promtest.Value(t, reg, "safeflow_job_last_success_timestamp_seconds", "job", "hourly"); got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last success of the hourly job = %v, want now: it ran at start", got)
	}
}
