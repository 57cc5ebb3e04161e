package http

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the API's Prometheus collectors.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	problems *prometheus.CounterVec
	replays  prometheus.Counter
}

// NewMetrics registers the API's collectors on reg, which /metrics serves.
func NewMetrics(reg *prometheus.Registry) *Metrics {
	m := &Metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "safeflow_http_requests_total",
			Help: "HTTP requests by method, route pattern and status code."}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "safeflow_http_request_duration_seconds",
			Help: "HTTP request durations by method and route pattern.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)},
			[]string{"method", "route"}),
		problems: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "safeflow_problems_total",
			Help: "Problem responses by problem code."}, []string{"code"}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{Name: "safeflow_idempotent_replays_total",
			Help: "Responses replayed from an idempotency record."}),
	}
	reg.MustRegister(m.requests, m.duration, m.problems, m.replays)
	return m
}

func (m *Metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}
