package http

import (
	"errors"
	"net/http"
	"strconv"

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
		Detail: de.Detail, Code: de.Code, Errors: de.Fields, CurrentStatus: de.CurrentStatus}
}

// problemFor is the problem detail of de in answer to r, which it names.
func problemFor(r *http.Request, de *domain.Error) problem {
	p := newProblem(de)
	if id, ok := hlog.IDFromRequest(r); ok {
		p.Instance = "urn:request:" + id.String()
	}
	return p
}

// writeProblem is the one place where an error becomes a response. An
// internal error is logged here, once, and never sent.
func (s *server) writeProblem(w http.ResponseWriter, r *http.Request, err error) {
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
}
