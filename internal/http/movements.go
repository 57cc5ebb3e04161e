package http

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/safeflow/safeflow/internal/domain"
)

type movementRequest struct {
	Amount    *int64  `json:"amount"`
	Reference *string `json:"reference,omitempty"`
}

func (in movementRequest) valid() []domain.FieldError {
	var fe []domain.FieldError
	if in.Amount == nil {
		fe = append(fe, domain.FieldError{Field: "amount", Message: "is required"})
	} else if msg := domain.CheckAmount(*in.Amount); msg != "" {
		fe = append(fe, domain.FieldError{Field: "amount", Message: msg})
	}
	if msg := domain.CheckText(in.Reference, domain.MaxReferenceLen); msg != "" {
		fe = append(fe, domain.FieldError{Field: "reference", Message: msg})
	}
	return fe
}

// handleMove creates a deposit or a withdrawal (kind) on an account.
func (s *server) handleMove(kind string) http.HandlerFunc {
	location := func(m domain.Movement) string { return "/v1/" + kind + "s/" + m.ID }
	return mutating(s, jsonAnswer(http.StatusCreated, location, nil),
		func(r *http.Request, in movementRequest, req domain.Request[domain.Movement]) (domain.Response, error) {
			return s.store.Move(r.Context(), req, domain.NewMovement{
				Kind: kind, AccountID: chi.URLParam(r, "account_id"), Amount: *in.Amount, Reference: in.Reference})
		})
}

func (s *server) handleGetMovement(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		m, err := s.store.GetMovement(r.Context(), tenantOf(r), kind, chi.URLParam(r, "id"))
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, m)
	}
}
