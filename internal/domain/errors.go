package domain

import (
	"fmt"
	"net/http"
)

// Kind classifies an Error. Its row in kinds says what the client sees.
type Kind int

// The kinds of Error, in the order of kinds.
const (
	KindInternal         Kind = iota // any error that is not an *Error
	KindInvalid                      // the request is malformed or fails validation
	KindUnauthorized                 // no valid API key
	KindNotFound                     // no such resource for the tenant (or no such route)
	KindMethodNotAllowed             // the route exists, the method does not
	KindConflict                     // the resource's state forbids the change
	KindPrecondition                 // If-Match names another version
	KindTooLarge                     // the body is over 1 MiB
	KindUnsupportedMedia             // the body is not JSON
	KindUnprocessable                // a well-formed request the domain refuses
	KindKeyInUse                     // another request holds the Idempotency-Key
	KindKeyReused                    // the Idempotency-Key names another request
	KindUnavailable                  // transient: nothing was applied, the same request may be retried
	KindOutcomeUnknown               // the connection died during COMMIT and the server could not learn the outcome
	numKinds
)

// kinds is the one table of what each kind of error becomes: its HTTP
// status, whether a safe flow that ends with it stores it on the
// idempotency record and replays it, and its Retry-After in seconds.
// docs/transactions.md shows it (a test keeps the two alike).
//
// Stored are the deterministic answers of the domain to the request itself:
// the same request would get the same answer again. Not stored is anything
// about the key rather than the request (in use, reused), anything the
// client can fix and send again under the same key (400, 401, 412, 413,
// 415), and anything transient (503) or unexpected (500), after which the
// transaction has rolled back and nothing was applied.
var kinds = [numKinds]struct {
	name       string
	status     int
	stored     bool
	retryAfter int
}{
	KindInternal:         {"internal", http.StatusInternalServerError, false, 0},
	KindInvalid:          {"invalid", http.StatusBadRequest, false, 0},
	KindUnauthorized:     {"unauthorized", http.StatusUnauthorized, false, 0},
	KindNotFound:         {"not_found", http.StatusNotFound, true, 0},
	KindMethodNotAllowed: {"method_not_allowed", http.StatusMethodNotAllowed, false, 0},
	KindConflict:         {"conflict", http.StatusConflict, true, 0},
	KindPrecondition:     {"precondition", http.StatusPreconditionFailed, false, 0},
	KindTooLarge:         {"too_large", http.StatusRequestEntityTooLarge, false, 0},
	KindUnsupportedMedia: {"unsupported_media", http.StatusUnsupportedMediaType, false, 0},
	KindUnprocessable:    {"unprocessable", http.StatusUnprocessableEntity, true, 0},
	KindKeyInUse:         {"key_in_use", http.StatusConflict, false, 1},
	KindKeyReused:        {"key_reused", http.StatusUnprocessableEntity, false, 0},
	KindUnavailable:      {"unavailable", http.StatusServiceUnavailable, false, 1},
	KindOutcomeUnknown:   {"outcome_unknown", http.StatusServiceUnavailable, false, 1},
}

// String names kind k as the table does.
func (k Kind) String() string { return kinds[k].name }

// Status is the HTTP status of an error of kind k.
func (k Kind) Status() int { return kinds[k].status }

// Stored reports whether an error of kind k that ends a safe flow is stored
// on the idempotency record and replayed.
func (k Kind) Stored() bool { return kinds[k].stored }

// RetryAfter is the Retry-After, in seconds, of an error of kind k (0: none).
func (k Kind) RetryAfter() int { return kinds[k].retryAfter }

// Problem codes that are part of the contract (product.md).
const (
	CodeInternal              = "internal_error"
	CodeInvalidRequest        = "invalid_request"
	CodeUnauthorized          = "unauthorized"
	CodeNotFound              = "not_found"
	CodeMethodNotAllowed      = "method_not_allowed"
	CodePayloadTooLarge       = "payload_too_large"
	CodeUnsupportedMediaType  = "unsupported_media_type"
	CodeInsufficientFunds     = "insufficient_funds"
	CodeIdempotencyKeyReused  = "idempotency_key_reused"
	CodeIdempotencyKeyInUse   = "idempotency_key_in_use"
	CodeServiceUnavailable    = "service_unavailable"
	CodeOutcomeUnknown        = "outcome_unknown"
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
	Kind   Kind
	Code   string       // stable slug from product.md, e.g. "insufficient_funds"
	Detail string       // this occurrence, for humans
	Fields []FieldError // when Kind == KindInvalid
	// CurrentStatus is the status of the resource that refused a transition
	// (invalid_transition).
	CurrentStatus string
	// Attempts are the recorded failures of a key that has no live record
	// (GET /v1/idempotency-keys/{key} answering 404).
	Attempts []FailedAttempt
}

func (e *Error) Error() string { return e.Code + ": " + e.Detail }

// Stored reports whether e, ending a safe flow, is stored and replayed.
func (e *Error) Stored() bool { return e.Kind.Stored() }

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
	return &Error{Kind: KindUnavailable, Code: CodeServiceUnavailable, Detail: detail}
}

// OutcomeUnknown is the answer to a request whose COMMIT was sent but whose
// outcome the server could not learn: it may have been applied. Retrying
// with the same Idempotency-Key tells which (a replay, or a first run).
func OutcomeUnknown() *Error {
	return &Error{Kind: KindOutcomeUnknown, Code: CodeOutcomeUnknown,
		Detail: "the database connection was lost while this request was committing and its outcome could not be learned; it may have been applied: retry with the same Idempotency-Key to learn the outcome (or GET /v1/idempotency-keys/{key})"}
}

// Internal is the error a client is shown for any error that is not an
// *Error; the error itself is logged, never sent.
func Internal() *Error {
	return &Error{Kind: KindInternal, Code: CodeInternal, Detail: "an unexpected error occurred; it has been logged"}
}
