package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/safeflow/safeflow/internal/domain"
)

// Metrics are the store's Prometheus collectors. A nil *Metrics counts
// nothing.
type Metrics struct {
	retries        *prometheus.CounterVec
	keysPurged     prometheus.Counter
	commitOutcomes *prometheus.CounterVec
	txDuration     *prometheus.HistogramVec
	rollbacks      *prometheus.CounterVec
	inFlight       prometheus.Gauge
	invariants     *prometheus.GaugeVec
	groups         prometheus.Histogram
}

// NewMetrics registers the store's collectors on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "safeflow_tx_retries_total",
			Help: "Safe-flow transactions run again after a transient PostgreSQL error, by reason."}, []string{"reason"}),
		keysPurged: prometheus.NewCounter(prometheus.CounterOpts{Name: "safeflow_idempotency_keys_purged_total",
			Help: "Expired idempotency records deleted by the janitor."}),
		commitOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "safeflow_commit_outcomes_learned_total",
			Help: "COMMITs whose reply was lost, by what the server learned of them before answering: committed, rolled_back or unknown."},
			[]string{"outcome"}),
	}
	for _, r := range retryReasons {
		m.retries.WithLabelValues(r) // exported at 0 from the start
	}
	m.txDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "safeflow_tx_duration_seconds",
		Help:    "Safe-flow transactions, one try each, from BEGIN to COMMIT or ROLLBACK, by how they ended: commit or rollback.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}, []string{"end"})
	m.rollbacks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "safeflow_tx_rollbacks_total",
		Help: "Safe-flow transactions rolled back, by reason: replay (the key's answer was stored), a retry reason " +
			"(serialization_failure, deadlock, lock_timeout), key_in_use, key_reused, unavailable (connection, timeout, " +
			"cancelled), commit_lost (the COMMIT's reply was lost) or error."}, []string{"reason"})
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{Name: "safeflow_tx_in_flight",
		Help: "Safe-flow transactions open right now."})
	m.invariants = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "safeflow_invariant_violations",
		Help: "Rows breaking each invariant of product.md §6 at the last periodic verification (VERIFY_INTERVAL); " +
			"anything but 0 is a bug or a manual change: run api verify, then api verify --repair for derived state."}, []string{"check"})
	for _, o := range []string{"committed", "rolled_back", "unknown"} {
		m.commitOutcomes.WithLabelValues(o)
	}
	for _, r := range append([]string{"replay", "key_in_use", "key_reused", "unavailable", "commit_lost", "error"}, retryReasonLabels()...) {
		m.rollbacks.WithLabelValues(r)
	}
	m.groups = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "safeflow_coalesced_group_size",
		Help:    "Requests of one account run together in one transaction (hot rows), per group of two or more.",
		Buckets: []float64{2, 4, 8, 16, 24}})
	reg.MustRegister(m.retries, m.keysPurged, m.commitOutcomes, m.txDuration, m.rollbacks, m.inFlight, m.invariants, m.groups)
	return m
}

func (m *Metrics) retried(reason string) {
	if m != nil {
		m.retries.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) purgedKeys(n int64) {
	if m != nil {
		m.keysPurged.Add(float64(n))
	}
}

func (m *Metrics) commitOutcome(outcome string) {
	if m != nil {
		m.commitOutcomes.WithLabelValues(outcome).Inc()
	}
}

// began counts a transaction open; the returned function records how it
// ended (err nil and committed: a commit).
func (m *Metrics) began() func(committed bool, err error) {
	if m == nil {
		return func(bool, error) {}
	}
	start := time.Now()
	m.inFlight.Inc()
	return func(committed bool, err error) {
		m.inFlight.Dec()
		end := "commit"
		if !committed {
			end = "rollback"
			m.rollbacks.WithLabelValues(rollbackReason(err)).Inc()
		}
		m.txDuration.WithLabelValues(end).Observe(time.Since(start).Seconds())
	}
}

// rollbackReason labels why a try of a safe flow did not commit.
func rollbackReason(err error) string {
	var de *domain.Error
	switch {
	case err == nil:
		return "replay"
	case retryReason(err) != "":
		return retryReason(err)
	case errors.As(err, &de) && de.Kind == domain.KindKeyInUse:
		return "key_in_use"
	case errors.As(err, &de) && de.Kind == domain.KindKeyReused:
		return "key_reused"
	case errors.As(err, &de) && de.Kind == domain.KindOutcomeUnknown, errors.Is(err, errCommitLost):
		return "commit_lost"
	case errors.Is(err, context.Canceled) || unavailable(err) || errors.As(err, &de) && de.Kind == domain.KindUnavailable:
		return "unavailable"
	}
	return "error"
}

func retryReasonLabels() []string {
	out := make([]string, 0, len(retryReasons))
	for _, r := range retryReasons {
		out = append(out, r)
	}
	return out
}

// NewPoolCollector exports pool's pgxpool.Stat as safeflow_db_pool_*
// metrics labelled pool=name, read when scraped.
func NewPoolCollector(name string, pool *pgxpool.Pool) prometheus.Collector {
	d := func(metric, help string) *prometheus.Desc {
		return prometheus.NewDesc("safeflow_db_pool_"+metric, help, nil, prometheus.Labels{"pool": name})
	}
	return &poolCollector{pool: pool, descs: [7]*prometheus.Desc{
		d("acquired_connections", "Connections of the pool in use."),
		d("idle_connections", "Connections of the pool idle."),
		d("total_connections", "Connections of the pool open (acquired, idle or being opened)."),
		d("max_connections", "The pool's size."),
		d("acquires_total", "Connections acquired from the pool."),
		d("empty_acquires_total", "Acquires that had to wait for a connection (none idle)."),
		d("acquire_wait_seconds_total", "Time spent acquiring connections; its rate over the acquires' is the mean wait."),
	}}
}

type poolCollector struct {
	pool  *pgxpool.Pool
	descs [7]*prometheus.Desc
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.pool.Stat()
	values := [7]float64{float64(st.AcquiredConns()), float64(st.IdleConns()), float64(st.TotalConns()), float64(st.MaxConns()),
		float64(st.AcquireCount()), float64(st.EmptyAcquireCount()), st.AcquireDuration().Seconds()}
	for i, d := range c.descs {
		t := prometheus.GaugeValue
		if i >= 4 {
			t = prometheus.CounterValue
		}
		ch <- prometheus.MustNewConstMetric(d, t, values[i])
	}
}

// NewServerCollector exports what the database server says of itself,
// read on pool (keep it apart from the business pool, so a busy service
// still answers its scrape) when scraped. A value that cannot be read
// within half a second is left out of that scrape.
func NewServerCollector(pool *pgxpool.Pool) prometheus.Collector {
	return &serverCollector{pool: pool}
}

type serverCollector struct{ pool *pgxpool.Pool }

var oldestTx = prometheus.NewDesc("safeflow_db_oldest_transaction_age_seconds",
	"Age of the oldest transaction open on the database server (any database) that holds an xid or a snapshot. "+
		"It holds back the event feed, which serves only events older than every open transaction, and vacuum.", nil, nil)

// oldestTransaction is the age of the oldest transaction on the server
// that holds back the feed's xmin.
const oldestTransaction = `
SELECT coalesce(extract(epoch FROM now() - min(xact_start)), 0)::float8
FROM pg_stat_activity WHERE (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) AND pid <> pg_backend_pid()`

func (c *serverCollector) Describe(ch chan<- *prometheus.Desc) { ch <- oldestTx }

func (c *serverCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var age float64
	if err := c.pool.QueryRow(ctx, oldestTransaction).Scan(&age); err != nil {
		return // left out of this scrape
	}
	ch <- prometheus.MustNewConstMetric(oldestTx, prometheus.GaugeValue, age)
}

func (m *Metrics) violations(check string, n int) {
	if m != nil {
		m.invariants.WithLabelValues(check).Set(float64(n))
	}
}

func (m *Metrics) coalesced(n int) {
	if m != nil {
		m.groups.Observe(float64(n))
	}
}
