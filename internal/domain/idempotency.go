package domain

import "time"

// Response is the answer to a mutating request, rendered inside its
// transaction and stored on the idempotency record, so a replay returns the
// same status, headers and bytes.
type Response struct {
	Status      int
	ContentType string
	Location    string
	ETag        string
	Body        []byte
	Replayed    bool // true when served from the idempotency record
}

// Idempotency identifies a mutating request on the idempotency record: the
// tenant's key and the fingerprint of the request that the key names.
type Idempotency struct {
	TenantID    string
	Key         string
	Fingerprint []byte // hash of method, route, path parameters and canonical body
	// Method and Path are the request's, shown by GET /v1/idempotency-keys/{key}.
	Method, Path string
}

// Idempotency key statuses, as GET /v1/idempotency-keys/{key} shows them.
const (
	KeyInProgress = "in_progress" // claimed by a transaction that has not committed
	KeyCompleted  = "completed"   // its answer is stored and replayed
)

// IdempotencyKey is what a tenant may learn of one of its live keys. A key
// in progress is claimed by a transaction that has not committed, so only
// its existence is known: its other fields are null until it completes.
// Method and path are null for keys claimed before they were recorded.
type IdempotencyKey struct {
	Object         string     `json:"object"`
	Key            string     `json:"key"`
	Status         string     `json:"status"`
	Method         *string    `json:"method"`
	Path           *string    `json:"path"`
	ResponseStatus *int       `json:"response_status"`
	CreatedAt      *time.Time `json:"created_at"`
	ExpiresAt      *time.Time `json:"expires_at"`
	// Attempts are the recorded failures of requests sent under the key
	// (5xx answers, retries run out), newest first: they outlive the
	// rollbacks of their transactions.
	Attempts []FailedAttempt `json:"attempts"`
}

// Request is one mutating request under an idempotency key. Applied, its
// change has a result of type T.
//
// Render and Refuse make the answer that is stored on the key and sent: to
// the applied change, from its result, or to a refusal that is stored
// (Stored() is true). They run inside the transaction, so that the answer
// commits with the change or not at all. An error they return is internal,
// and nothing is stored.
type Request[T any] struct {
	Idempotency
	Render func(result T) (Response, error)
	Refuse func(refusal *Error) (Response, error)
}

// MissingIdempotencyKey is the refusal of a POST without an Idempotency-Key.
func MissingIdempotencyKey() *Error {
	return &Error{Kind: KindInvalid, Code: CodeIdempotencyKeyMissing,
		Detail: "every POST requires an Idempotency-Key header (1 to 255 printable ASCII characters; a UUID is a good choice)"}
}

// CheckIdempotencyKey validates the values of the Idempotency-Key header:
// exactly one, of 1 to 255 printable ASCII characters.
func CheckIdempotencyKey(values []string) *Error {
	if len(values) == 0 {
		return MissingIdempotencyKey()
	}
	if len(values) > 1 {
		return &Error{Kind: KindInvalid, Code: CodeIdempotencyKeyInvalid, Detail: "send exactly one Idempotency-Key header"}
	}
	k := values[0]
	if k == "" || len(k) > 255 {
		return &Error{Kind: KindInvalid, Code: CodeIdempotencyKeyInvalid, Detail: "the Idempotency-Key must be 1 to 255 characters"}
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return &Error{Kind: KindInvalid, Code: CodeIdempotencyKeyInvalid, Detail: "the Idempotency-Key must be printable ASCII"}
		}
	}
	return nil
}
