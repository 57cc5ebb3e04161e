package http

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog/hlog"

	"github.com/safeflow/safeflow/internal/domain"
)

// problemBase prefixes every problem type; the code completes it.
const problemBase = "https://safeflow.dev/problems/"

// problem is an RFC 9457 problem detail with safeflow's extensions.
type problem struct {
	Type     string              `json:"type"`
	Title    string              `json:"title"`
	Status   int                 `json:"status"`
	Detail   string              `json:"detail"`
	Code     string              `json:"code"`
	Instance string              `json:"instance,omitempty"`
	Errors   []domain.FieldError `json:"errors,omitempty"`
	// CurrentStatus accompanies invalid_transition.
	CurrentStatus string `json:"current_status,omitempty"`
	// Attempts accompanies a 404 of GET /v1/idempotency-keys/{key} when
	// requests under the key failed.
	Attempts []domain.FailedAttempt `json:"attempts,omitempty"`
}

// clientError is what a client is told of err: err itself when it is a
// *domain.Error (its kind says the status, domain/errors.go), otherwise a
// generic 500; internal reports the latter.
func clientError(err error) (de *domain.Error, internal bool) {
	if errors.As(err, &de) {
		return de, false
	}
	return domain.Internal(), true
}

// newProblem is the problem detail of de.
func newProblem(de *domain.Error) problem {
	return problem{Type: problemBase + de.Code, Title: http.StatusText(de.Kind.Status()), Status: de.Kind.Status(),
		Detail: de.Detail, Code: de.Code, Errors: de.Fields, CurrentStatus: de.CurrentStatus, Attempts: de.Attempts}
}

// problemFor is the problem detail of de in answer to r, which it names.
func problemFor(r *http.Request, de *domain.Error) problem {
	p := newProblem(de)
	if id := requestIDOf(r); id != "" {
		p.Instance = "urn:request:" + id
	}
	return p
}

// writeProblem is the one place where an error becomes a response. An
// internal error is logged here, once, and never sent. A 5xx is recorded
// (see recordFailure); a 503 is logged at warn level with its cause.
func (s *server) writeProblem(w http.ResponseWriter, r *http.Request, err error) {
	de := s.sendProblem(w, r, err)
	if de.Kind.Status() >= 500 {
		if f, ok := w.(http.Flusher); ok {
			f.Flush() // the client has its answer before the record is written
		}
		s.recordFailure(r, err, de)
	}
}

// sendProblem writes the problem of err and returns what the client was told.
func (s *server) sendProblem(w http.ResponseWriter, r *http.Request, err error) *domain.Error {
	de, internal := clientError(err)
	if internal {
		hlog.FromRequest(r).Error().Err(err).Msg("internal error")
	}
	if de.Kind == domain.KindUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="safeflow"`)
	}
	if ra := de.Kind.RetryAfter(); ra > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ra))
	}
	p := problemFor(r, de)
	body, _ := marshal(p)
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
	s.metrics.problems.WithLabelValues(p.Code).Inc()
	return de
}

// recordFailure writes the record of a request that ended in a 5xx (its
// transaction rolled back, if it had one), outside any transaction, and
// logs the cause of a 503 at warn level. Requests shed by admission control
// are not recorded: they did no work, and recording them would add load
// exactly when there is too much (they are counted in
// safeflow_http_shed_total).
func (s *server) recordFailure(r *http.Request, err error, de *domain.Error) {
	f, ok := domain.FailureOf(err)
	if !ok {
		f = domain.Failure{Cause: err.Error(), Attempts: 1}
	}
	if de.Kind.Status() == http.StatusServiceUnavailable {
		hlog.FromRequest(r).Warn().Str("code", de.Code).Str("cause", f.Cause).Int("attempts", f.Attempts).Msg("503")
	}
	tenant := tenantOf(r)
	if tenant == "" {
		return // not authenticated: nothing to file it under
	}
	route := "unmatched"
	if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
		route = rc.RoutePattern()
	}
	attempt := domain.FailedAttempt{TenantID: tenant, IdempotencyKey: r.Header.Get("Idempotency-Key"), RequestID: requestIDOf(r),
		Method: r.Method, Route: route, Cause: f.Cause, Attempts: f.Attempts, Status: de.Kind.Status(), Code: de.Code,
		DurationMS: time.Since(startOf(r)).Milliseconds()}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), time.Second)
	defer cancel()
	if rerr := s.store.RecordFailure(ctx, attempt); rerr != nil {
		hlog.FromRequest(r).Warn().Err(rerr).Msg("the failed request could not be recorded")
	}
}
