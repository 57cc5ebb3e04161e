// Package periodic runs safeflow's background jobs (the idempotency
// janitor, webhook retention, and whatever else needs doing every so
// often) all in one way: each on a goroutine of its own, once at start and
// then every interval after the previous run ended, until Stop. Every run
// is timed and counted by job and result, and a failed run is logged; the
// next run is the retry.
//
// A job's owner defines it next to the work it does (store.Store.Jobs,
// relay.Retention.Jobs); the binary only chooses which jobs to start.
package periodic

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Job is one kind of periodic work.
type Job struct {
	Name  string        // the job label of the metrics and the logs, e.g. "idempotency_janitor"
	Every time.Duration // from the end of one run to the start of the next
	// Run does one run and returns how many items it handled (rows
	// purged, …), for the log. It must return soon after ctx ends.
	Run func(ctx context.Context) (int64, error)
}

// Runner runs jobs until Stop.
type Runner struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start runs each job on its own goroutine, first at once. The jobs stop
// when Stop is called, not when ctx ends: a server lets its jobs run while
// it drains its requests. m may be nil.
func Start(ctx context.Context, log zerolog.Logger, m *Metrics, jobs ...Job) *Runner {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &Runner{cancel: cancel}
	for _, j := range jobs {
		m.init(j.Name)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			loop(ctx, log.With().Str("job", j.Name).Logger(), m, j)
		}()
	}
	return r
}

// Stop cancels the runs in progress and waits for every job to return.
func (r *Runner) Stop() {
	r.cancel()
	r.wg.Wait()
}

func loop(ctx context.Context, log zerolog.Logger, m *Metrics, j Job) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		n, err := j.Run(ctx)
		if ctx.Err() != nil {
			return // stopped mid-run: neither a success nor a failure
		}
		m.ran(j.Name, time.Since(start), err)
		if err != nil {
			log.Warn().Err(err).Int64("items", n).Msg("background job failed; it runs again at its next interval")
		} else {
			log.Debug().Int64("items", n).Dur("took", time.Since(start)).Msg("background job ran")
		}
		t.Reset(j.Every)
	}
}

// Metrics are the runner's Prometheus collectors. A nil *Metrics counts
// nothing.
type Metrics struct {
	runs        *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	lastSuccess *prometheus.GaugeVec
}

// NewMetrics registers the runner's collectors on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "safeflow_job_runs_total",
			Help: "Runs of background jobs (idempotency janitor, retention, …) by job and result (ok, error)."}, []string{"job", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "safeflow_job_duration_seconds",
			Help: "How long runs of background jobs took, by job.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"job"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "safeflow_job_last_success_timestamp_seconds",
			Help: "When each background job last finished a run without error (Unix seconds; 0: never)."}, []string{"job"}),
	}
	reg.MustRegister(m.runs, m.duration, m.lastSuccess)
	return m
}

// init exports a job's series at 0 from the start.
func (m *Metrics) init(job string) {
	if m != nil {
		m.runs.WithLabelValues(job, "ok")
		m.runs.WithLabelValues(job, "error")
		m.lastSuccess.WithLabelValues(job)
	}
}

func (m *Metrics) ran(job string, took time.Duration, err error) {
	if m == nil {
		return
	}
	m.duration.WithLabelValues(job).Observe(took.Seconds())
	if err != nil {
		m.runs.WithLabelValues(job, "error").Inc()
		return
	}
	m.runs.WithLabelValues(job, "ok").Inc()
	m.lastSuccess.WithLabelValues(job).SetToCurrentTime()
}
