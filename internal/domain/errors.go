package domain

import "fmt"

// Kind classifies an Error; the HTTP layer maps each kind to one status.
type Kind int

// The kinds of Error.
const (
	KindInvalid       Kind = iota + 1 // 400: the request is malformed or fails validation
	KindUnauthorized                  // 401
	KindNotFound                      // 404
	KindConflict                      // 409
	KindUnprocessable                 // 422: a well-formed request the domain refuses
	KindUnavailable                   // 503: transient; the same request may be retried
	KindPrecondition                  // 412: If-Match names another version; not stored
)

// Problem codes that are part of the contract (product.md).
const (
	CodeInvalidRequest        = "invalid_request"
	CodeUnauthorized          = "unauthorized"
	CodeNotFound              = "not_found"
	CodeInsufficientFunds     = "insufficient_funds"
	CodeIdempotencyKeyReused  = "idempotency_key_reused"
	CodeIdempotencyKeyInUse   = "idempotency_key_in_use"
	CodeServiceUnavailable    = "service_unavailable"
	CodeAmountOutOfRange      = "amount_out_of_range"
	CodeIdempotencyKeyMissing = "idempotency_key_missing"
	CodeIdempotencyKeyInvalid = "idempotency_key_invalid"
	CodeInvalidTransition     = "invalid_transition"
	CodeSameAccount           = "same_account"
	CodeCurrencyMismatch      = "currency_mismatch"
	CodePreconditionFailed    = "precondition_failed"
)

// FieldError is one offending field of an invalid request.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error is a failure that is safe to show a client. Any other error is an
// internal one and becomes a generic 500.
type Error struct {
	Kind       Kind
	Code       string       // stable slug from product.md, e.g. "insufficient_funds"
	Detail     string       // this occurrence, for humans
	Fields     []FieldError // when Kind == KindInvalid
	RetryAfter int          // seconds; set on KindUnavailable and idempotency_key_in_use
	// CurrentStatus is the status of the resource that refused a transition
	// (invalid_transition).
	CurrentStatus string
}

func (e *Error) Error() string { return e.Code + ": " + e.Detail }

// Stored reports whether the refusal is a deterministic answer of the domain
// that is stored on the idempotency record and replayed (404, 409, 422), as
// opposed to one the client may retry with the same key.
func (e *Error) Stored() bool {
	switch e.Kind {
	case KindNotFound, KindConflict, KindUnprocessable:
		return e.Code != CodeIdempotencyKeyInUse && e.Code != CodeIdempotencyKeyReused
	}
	return false
}

// NotFound is the refusal for a resource that does not exist for the tenant.
func NotFound(resource, id string) *Error {
	return &Error{Kind: KindNotFound, Code: CodeNotFound, Detail: fmt.Sprintf("no %s with id %q", resource, id)}
}

// Invalid builds a validation error from per-field problems.
func Invalid(fields ...FieldError) *Error {
	return &Error{Kind: KindInvalid, Code: CodeInvalidRequest, Detail: "the request is invalid; see errors", Fields: fields}
}

// Unavailable is a transient failure; the client should retry after a pause.
func Unavailable(detail string) *Error {
	return &Error{Kind: KindUnavailable, Code: CodeServiceUnavailable, Detail: detail, RetryAfter: 1}
}
