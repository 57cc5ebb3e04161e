package relay

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the relay's Prometheus collectors. A nil *Metrics counts
// nothing.
type Metrics struct {
	deliveries *prometheus.CounterVec // by final outcome of an attempt's record
	attempts   *prometheus.CounterVec // HTTP attempts by result
	latency    prometheus.Histogram   // event created → delivered
	claimed    prometheus.Histogram   // rows per claim
	purgedRows *prometheus.CounterVec
	errs       *prometheus.CounterVec // database errors by path
}

// NewMetrics registers the relay's collectors on reg, including gauges of
// the backlog read from pool at scrape time (give it a pool the business
// requests do not use, so a busy service still answers its scrape).
func NewMetrics(reg prometheus.Registerer, pool *pgxpool.Pool) *Metrics {
	m := &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "safeflow_webhook_deliveries_total",
			Help: "Recorded delivery attempts by outcome: delivered, retry (failed, will be retried), dead, " +
				"or lease_lost (another relay took the delivery over; nothing recorded)."}, []string{"outcome"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "safeflow_webhook_attempts_total",
			Help: "HTTP delivery attempts by result: 2xx, 3xx, 4xx, 5xx, timeout, refused (non-public address), network_error, skipped (endpoint disabled)."},
			[]string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "safeflow_webhook_delivery_latency_seconds",
			Help:    "From the event's transaction to the receiver's 2xx, for delivered events.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600}}),
		claimed: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "safeflow_relay_claim_batch_size",
			Help: "Deliveries claimed per claim query.", Buckets: []float64{0, 1, 2, 4, 8, 16, 32, 64, 128}}),
		purgedRows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "safeflow_outbox_purged_total",
			Help: "Rows deleted by retention: delivered and dead deliveries, events."}, []string{"kind"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "safeflow_relay_errors_total",
			Help: "Database errors of the relay by path: claim, record (each failed try; outcomes are kept and retried), " +
				"listen (the LISTEN connection lost) and retention."}, []string{"op"}),
	}
	for _, op := range []string{"claim", "record", "listen", "retention"} {
		m.errs.WithLabelValues(op)
	}
	for _, r := range []string{"2xx", "3xx", "4xx", "5xx", "timeout", "refused", "network_error", "skipped"} {
		m.attempts.WithLabelValues(r)
	}
	for _, o := range []string{"delivered", "retry", "dead", "lease_lost"} {
		m.deliveries.WithLabelValues(o)
	}
	reg.MustRegister(m.deliveries, m.attempts, m.latency, m.claimed, m.purgedRows, m.errs, &backlog{pool: pool})
	return m
}

func (m *Metrics) errored(op string) {
	if m != nil {
		m.errs.WithLabelValues(op).Inc()
	}
}

func (m *Metrics) attempted(result string) {
	if m != nil {
		m.attempts.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) recorded(outcome string) {
	if m != nil {
		m.deliveries.WithLabelValues(outcome).Inc()
	}
}

func (m *Metrics) delivered(latency time.Duration) {
	if m != nil {
		m.deliveries.WithLabelValues("delivered").Inc()
		m.latency.Observe(latency.Seconds())
	}
}

func (m *Metrics) claimedBatch(n int) {
	if m != nil {
		m.claimed.Observe(float64(n))
	}
}

func (m *Metrics) purged(kind string, n int64) {
	if m != nil {
		m.purgedRows.WithLabelValues(kind).Add(float64(n))
	}
}

// backlog reads the delivery table's state when scraped.
type backlog struct{ pool *pgxpool.Pool }

var (
	pendingDesc = prometheus.NewDesc("safeflow_webhook_backlog", "Deliveries pending (due, waiting for a retry, or in flight).", nil, nil)
	deadDesc    = prometheus.NewDesc("safeflow_webhook_dead", "Deliveries dead and kept for replay.", nil, nil)
	oldestDesc  = prometheus.NewDesc("safeflow_webhook_oldest_pending_age_seconds", "Age of the oldest undelivered pending delivery (0 when none).", nil, nil)
)

func (b *backlog) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- deadDesc
	ch <- oldestDesc
}

const backlogStats = `
SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'dead'),
       coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending')), 0)::float8
FROM webhook_deliveries WHERE status <> 'delivered'`

func (b *backlog) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var pending, dead int64
	var oldest float64
	if err := b.pool.QueryRow(ctx, backlogStats).Scan(&pending, &dead, &oldest); err != nil {
		return // left out of this scrape, which still answers
	}
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(pending))
	ch <- prometheus.MustNewConstMetric(deadDesc, prometheus.GaugeValue, float64(dead))
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, oldest)
}
