package domain

import (
	"errors"
	"time"
)

// Failure is how a request failed on the server side: what caused it (a
// SQLSTATE, a lost connection, ...) and after how many tries of its
// transaction. The store attaches it to the errors it returns for 5xx
// answers, for the record of failed attempts.
type Failure struct {
	Cause    string
	Attempts int
}

// failed is an error with its Failure; errors.As and errors.Is see through
// it to the error itself.
type failed struct {
	error
	f Failure
}

func (e failed) Unwrap() error { return e.error }

// WithFailure attaches f to err.
func WithFailure(err error, f Failure) error {
	if err == nil {
		return nil
	}
	return failed{err, f}
}

// FailureOf returns the Failure attached to err, if any.
func FailureOf(err error) (Failure, bool) {
	var fe failed
	if errors.As(err, &fe) {
		return fe.f, true
	}
	return Failure{}, false
}

// FailedAttempt is the record of one request that ended in a 5xx (or ran
// out of retries), written outside its failed transaction so that it
// survives the rollback, and shown by GET /v1/idempotency-keys/{key}.
type FailedAttempt struct {
	TenantID       string    `json:"-"`
	IdempotencyKey string    `json:"-"`
	RequestID      string    `json:"request_id"`
	Method         string    `json:"method"`
	Route          string    `json:"route"`
	Cause          string    `json:"cause"`
	Attempts       int       `json:"attempts"`
	Status         int       `json:"status"`
	Code           string    `json:"code"`
	DurationMS     int64     `json:"duration_ms"`
	At             time.Time `json:"at"`
}
