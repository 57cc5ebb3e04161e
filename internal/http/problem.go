package http

import (
	"context"
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

var kindStatus = map[domain.Kind]int{
	domain.KindInvalid:       http.StatusBadRequest,
	domain.KindUnauthorized:  http.StatusUnauthorized,
	domain.KindNotFound:      http.StatusNotFound,
	domain.KindConflict:      http.StatusConflict,
	domain.KindUnprocessable: http.StatusUnprocessableEntity,
	domain.KindUnavailable:   http.StatusServiceUnavailable,
	domain.KindPrecondition:  http.StatusPreconditionFailed,
}

// requestError is a refusal of the HTTP layer itself (413, 415, 405, 404 of
// an unknown route), never stored for idempotency.
type requestError struct {
	status int
	code   string
	detail string
}

func (e *requestError) Error() string { return e.code + ": " + e.detail }

// problemFor builds the problem for err; ok is false for an internal error,
// which must be logged and hidden.
func problemFor(r *http.Request, err error) (p problem, retryAfter int, ok bool) {
	var re *requestError
	var de *domain.Error
	switch {
	case errors.As(err, &re):
		p = problem{Status: re.status, Code: re.code, Detail: re.detail}
	case errors.As(err, &de):
		p = problem{Status: kindStatus[de.Kind], Code: de.Code, Detail: de.Detail, Errors: de.Fields, CurrentStatus: de.CurrentStatus}
		retryAfter = de.RetryAfter
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		// The client went away or the server is shutting down: nothing was applied.
		p = problem{Status: http.StatusServiceUnavailable, Code: domain.CodeServiceUnavailable,
			Detail: "the request was cancelled before it completed; nothing was applied, retry with the same Idempotency-Key"}
		retryAfter = 1
	default:
		p = problem{Status: http.StatusInternalServerError, Code: "internal_error",
			Detail: "an unexpected error occurred; it has been logged"}
	}
	p.Type = problemBase + p.Code
	p.Title = http.StatusText(p.Status)
	if id, ok := hlog.IDFromRequest(r); ok {
		p.Instance = "urn:request:" + id.String()
	}
	return p, retryAfter, p.Status != http.StatusInternalServerError
}

// writeProblem is the one place where an error becomes a response.
func (s *server) writeProblem(w http.ResponseWriter, r *http.Request, err error) {
	p, retryAfter, ok := problemFor(r, err)
	if !ok {
		hlog.FromRequest(r).Error().Err(err).Msg("internal error")
	}
	if p.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="safeflow"`)
	}
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	body, _ := marshal(p)
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
	s.metrics.problems.WithLabelValues(p.Code).Inc()
}
