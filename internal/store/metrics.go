package store

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the store's Prometheus collectors. A nil *Metrics counts
// nothing.
type Metrics struct {
	retries        *prometheus.CounterVec
	keysPurged     prometheus.Counter
	commitOutcomes *prometheus.CounterVec
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
	for _, o := range []string{"committed", "rolled_back", "unknown"} {
		m.commitOutcomes.WithLabelValues(o)
	}
	reg.MustRegister(m.retries, m.keysPurged, m.commitOutcomes)
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
