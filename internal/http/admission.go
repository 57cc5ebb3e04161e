package http

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/hlog"

	"github.com/safeflow/safeflow/internal/domain"
)

// Admission bounds the work the API takes on: at most MaxInFlight requests
// under /v1 run at once (16), at most MaxQueued more wait for a slot (4 ×
// MaxInFlight; negative: none), each for at most QueueWait (500ms). Anything beyond is answered at once with 503
// service_unavailable and Retry-After, before it touches the database:
// nothing applied, nothing stored. A queued request whose client goes away
// leaves the queue.
//
// With MaxInFlight no larger than the business pool (the default, see
// cmd/api), an admitted request finds a database connection without
// waiting: the relay, the background jobs and /readyz and /metrics use
// pools of their own.
type Admission struct {
	MaxInFlight int
	MaxQueued   int
	QueueWait   time.Duration
}

type admission struct {
	slots     chan struct{}
	queued    atomic.Int64
	maxQueued int64
	wait      time.Duration
	shed      *prometheus.CounterVec
}

func newAdmission(a Admission, reg prometheus.Registerer) *admission {
	if a.MaxInFlight <= 0 {
		a.MaxInFlight = 16
	}
	switch {
	case a.MaxQueued == 0:
		a.MaxQueued = 4 * a.MaxInFlight
	case a.MaxQueued < 0:
		a.MaxQueued = 0
	}
	if a.QueueWait <= 0 {
		a.QueueWait = 500 * time.Millisecond
	}
	ad := &admission{slots: make(chan struct{}, a.MaxInFlight), maxQueued: int64(a.MaxQueued), wait: a.QueueWait,
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "safeflow_http_shed_total",
			Help: "Requests answered 503 by admission control before any work, by reason: queue_full (every slot and " +
				"queue place taken) or queue_timeout (waited QueueWait for a slot)."}, []string{"reason"})}
	for _, r := range []string{"queue_full", "queue_timeout"} {
		ad.shed.WithLabelValues(r)
	}
	reg.MustRegister(ad.shed,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "safeflow_http_in_flight",
			Help: "Requests under /v1 being served now (admitted)."}, func() float64 { return float64(len(ad.slots)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "safeflow_http_queued",
			Help: "Requests under /v1 waiting for a slot."}, func() float64 { return float64(ad.queued.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "safeflow_http_max_in_flight",
			Help: "The admission limit on requests in flight."}, func() float64 { return float64(cap(ad.slots)) }))
	return ad
}

// overloadLog names the cause of a shed request at warn level, a few a
// second at most: under overload there are thousands.
var overloadLog = &zerolog.BurstSampler{Burst: 5, Period: time.Second}

func (s *server) admit(next http.Handler) http.Handler {
	a := s.admission
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case a.slots <- struct{}{}:
		default:
			if !a.enqueue(w, r, s) {
				return
			}
		}
		defer func() { <-a.slots }()
		next.ServeHTTP(w, r)
	})
}

// enqueue waits for a slot; it answers the request itself and returns false
// when none comes.
func (a *admission) enqueue(w http.ResponseWriter, r *http.Request, s *server) bool {
	if a.queued.Add(1) > a.maxQueued {
		a.queued.Add(-1)
		a.refuse(w, r, s, "queue_full")
		return false
	}
	defer a.queued.Add(-1)
	t := time.NewTimer(a.wait)
	defer t.Stop()
	select {
	case a.slots <- struct{}{}:
		return true
	case <-t.C:
		a.refuse(w, r, s, "queue_timeout")
		return false
	case <-r.Context().Done():
		return false // the client is gone: nobody to answer
	}
}

func (a *admission) refuse(w http.ResponseWriter, r *http.Request, s *server, reason string) {
	a.shed.WithLabelValues(reason).Inc()
	log := hlog.FromRequest(r).Sample(overloadLog)
	log.Warn().Str("cause", "overload: "+reason).Int("in_flight", len(a.slots)).Msg("503: request shed before any work")
	s.sendProblem(w, r, domain.Unavailable("the server is at capacity; nothing was applied, retry after Retry-After seconds (with the same Idempotency-Key, if any)"))
}
