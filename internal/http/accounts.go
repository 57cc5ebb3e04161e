package http

import (
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/safeflow/safeflow/internal/domain"
)

type createAccountRequest struct {
	Currency string            `json:"currency"`
	Name     *string           `json:"name,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

func (in createAccountRequest) valid() []domain.FieldError {
	var fe []domain.FieldError
	if msg := domain.CheckCurrency(in.Currency); msg != "" {
		fe = append(fe, domain.FieldError{Field: "currency", Message: msg})
	}
	if msg := domain.CheckText(in.Name, domain.MaxNameLen); msg != "" {
		fe = append(fe, domain.FieldError{Field: "name", Message: msg})
	}
	return append(fe, domain.CheckMetadata("metadata", in.Metadata)...)
}

func accountLocation(a domain.Account) string { return "/v1/accounts/" + a.ID }

func accountETag(a domain.Account) string { return etag(a.Version) }

func (s *server) handleCreateAccount() http.HandlerFunc {
	return mutating(s, jsonAnswer(http.StatusCreated, accountLocation, accountETag),
		func(r *http.Request, in createAccountRequest, req domain.Request[domain.Account]) (domain.Response, error) {
			return s.store.CreateAccount(r.Context(), req, domain.NewAccount{Currency: in.Currency, Name: in.Name, Metadata: in.Metadata})
		})
}

func (s *server) handleGetAccount() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a, err := s.store.GetAccount(r.Context(), tenantOf(r), chi.URLParam(r, "account_id"))
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		w.Header().Set("ETag", accountETag(a))
		writeJSON(w, http.StatusOK, a)
	}
}

// list is the JSON shape of every list response.
type list[T any] struct {
	Data       []T     `json:"data"`
	NextCursor *string `json:"next_cursor"`
}

func newList[T any](items []T, next string) list[T] {
	l := list[T]{Data: items}
	if next != "" {
		c := base64.RawURLEncoding.EncodeToString([]byte(next))
		l.NextCursor = &c
	}
	return l
}

// page parses ?limit= (1–100, default 20) and the opaque ?cursor=.
func page(r *http.Request, idPrefix string) (domain.Page, error) {
	p := domain.Page{Limit: 20}
	var fe []domain.FieldError
	q := r.URL.Query()
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > 100 {
			fe = append(fe, domain.FieldError{Field: "limit", Message: "must be an integer from 1 to 100"})
		}
		p.Limit = n
	}
	if c := q.Get("cursor"); c != "" {
		id, err := base64.RawURLEncoding.DecodeString(c)
		if err != nil || !domain.ValidID(idPrefix, string(id)) {
			fe = append(fe, domain.FieldError{Field: "cursor", Message: "is not a cursor this list returned"})
		}
		p.After = string(id)
	}
	if len(fe) > 0 {
		return p, domain.Invalid(fe...)
	}
	return p, nil
}

// filteredPage parses a list's page and its two optional filters: ?status=
// (one of statuses) and an id parameter (an id with idPrefix). An empty value
// is no filter, so ?status=&account_id= lists everything; every bad
// parameter is reported at once.
func filteredPage(r *http.Request, pagePrefix string, statuses []string, idParam, idPrefix string) (p domain.Page, status, id string, err error) {
	p, err = page(r, pagePrefix)
	var fe []domain.FieldError
	if de := (*domain.Error)(nil); errors.As(err, &de) {
		fe = de.Fields
	}
	q := r.URL.Query()
	status, id = q.Get("status"), q.Get(idParam)
	if status != "" && !slices.Contains(statuses, status) {
		fe = append(fe, domain.FieldError{Field: "status", Message: "must be one of " + strings.Join(statuses, ", ")})
	}
	if id != "" && !domain.ValidID(idPrefix, id) {
		fe = append(fe, domain.FieldError{Field: idParam, Message: "must be an id starting with " + idPrefix})
	}
	if len(fe) > 0 {
		return p, "", "", domain.Invalid(fe...)
	}
	return p, status, id, nil
}

func (s *server) handleListAccounts() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := page(r, domain.PrefixAccount)
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		items, next, err := s.store.ListAccounts(r.Context(), tenantOf(r), p)
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, newList(items, next))
	}
}

func (s *server) handleListEntries() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := page(r, domain.PrefixEntry)
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		items, next, err := s.store.ListEntries(r.Context(), tenantOf(r), chi.URLParam(r, "account_id"), p)
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, newList(items, next))
	}
}
