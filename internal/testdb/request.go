package testdb

import (
	"encoding/json"
	"net/http"

	"github.com/safeflow/safeflow/internal/domain"
)

// Request is a request under key, with fingerprint fp, for tests that call
// the store directly. It is answered as the HTTP layer would, without
// depending on it: an applied change 201 with its JSON and the Location
// /v1/x/<id> (id names the result), a stored refusal 422 with its code as
// the body.
func Request[T any](tenantID, key, fp string, id func(T) string) domain.Request[T] {
	return domain.Request[T]{
		Idempotency: domain.Idempotency{TenantID: tenantID, Key: key, Fingerprint: []byte(fp)},
		Render: func(v T) (domain.Response, error) {
			body, err := json.Marshal(v)
			return domain.Response{Status: http.StatusCreated, ContentType: "application/json", Location: "/v1/x/" + id(v), Body: body}, err
		},
		Refuse: func(de *domain.Error) (domain.Response, error) {
			return domain.Response{Status: http.StatusUnprocessableEntity, ContentType: "application/problem+json", Body: []byte(de.Code)}, nil
		},
	}
}
