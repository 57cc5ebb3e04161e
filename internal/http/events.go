package http

import (
	"net/http"

	"github.com/safeflow/safeflow/internal/domain"
)

// handleListEvents is the event feed: GET /v1/events?after=&limit=. after
// is the id of the last event the client processed (or ?cursor= from
// next_cursor, which names the same event); next_cursor is null once the
// client has caught up, and it then polls with after= its last event id.
func (s *server) handleListEvents() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := page(r, domain.PrefixEvent)
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		if after := r.URL.Query().Get("after"); after != "" {
			if !domain.ValidID(domain.PrefixEvent, after) {
				s.writeProblem(w, r, domain.Invalid(domain.FieldError{Field: "after", Message: "must be the id of an event (evt_…) this feed returned"}))
				return
			}
			p.After = after
		}
		items, next, err := s.store.ListEvents(r.Context(), tenantOf(r), p)
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, newList(items, next))
	}
}
