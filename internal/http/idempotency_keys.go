package http

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/safeflow/safeflow/internal/domain"
)

// handleGetIdempotencyKey is GET /v1/idempotency-keys/{key}: what became of
// the request sent under one of the tenant's keys, without sending it again.
// The key is one path segment, URL-encoded when it holds '/' or other
// reserved characters.
func (s *server) handleGetIdempotencyKey() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := chi.URLParam(r, "key")
		if r.URL.RawPath != "" { // chi routed on the escaped path
			if k, err := url.PathUnescape(key); err == nil {
				key = k
			}
		}
		if domain.CheckIdempotencyKey([]string{key}) != nil {
			s.writeProblem(w, r, &domain.Error{Kind: domain.KindNotFound, Code: domain.CodeNotFound,
				Detail: "this tenant has no live idempotency key " + strconv.Quote(key)})
			return
		}
		k, err := s.store.GetIdempotencyKey(r.Context(), tenantOf(r), key)
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, k)
	}
}
