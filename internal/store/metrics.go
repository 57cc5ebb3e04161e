package store

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the store's Prometheus collectors. A nil *Metrics counts
// nothing.
type Metrics struct {
	retries    *prometheus.CounterVec
	keysPurged prometheus.Counter
}

// NewMetrics registers the store's collectors on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "safeflow_tx_retries_total",
			Help: "Safe-flow transactions run again after a transient PostgreSQL error, by reason."}, []string{"reason"}),
		keysPurged: prometheus.NewCounter(prometheus.CounterOpts{Name: "safeflow_idempotency_keys_purged_total",
			Help: "Expired idempotency records deleted by the janitor."}),
	}
	for _, r := range retryReasons {
		m.retries.WithLabelValues(r) // exported at 0 from the start
	}
	reg.MustRegister(m.retries, m.keysPurged)
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
