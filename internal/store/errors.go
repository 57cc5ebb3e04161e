package store

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/safeflow/safeflow/internal/domain"
)

// What the store makes of a database error, in the order a flow meets
// them: translate (a refusal raised by the database is the domain's
// answer), retryReason (run the whole transaction again) and public (the
// error a client is shown). Every error a Store method returns is a
// *domain.Error or an internal error; domain/errors.go says what each kind
// becomes.

// translate maps database errors that carry a domain meaning to *domain.Error.
func translate(err error) error {
	var pg *pgconn.PgError
	if err == nil {
		return nil
	}
	if !errors.As(err, &pg) {
		return err
	}
	switch {
	case pg.Code == "23514" && pg.ConstraintName == "accounts_books_nonnegative":
		// The last line of defence: the domain checks first, under the row lock.
		return &domain.Error{Kind: domain.KindUnprocessable, Code: domain.CodeInsufficientFunds,
			Detail: "the change would make a balance negative"}
	case pg.Code == "22003":
		return &domain.Error{Kind: domain.KindUnprocessable, Code: domain.CodeAmountOutOfRange,
			Detail: "the change would exceed the largest supported amount"}
	}
	return err
}

// storedRefusal returns the refusal in a translated err that is the
// domain's answer to store and replay, if it is one.
func storedRefusal(err error) (*domain.Error, bool) {
	var de *domain.Error
	if errors.As(err, &de) && de.Stored() {
		return de, true
	}
	return nil, false
}

// retryReasons are the SQLSTATEs of transient errors worth running a whole
// transaction again for, with the reason label of safeflow_tx_retries_total.
var retryReasons = map[string]string{
	"40001": "serialization_failure",
	"40P01": "deadlock",
	"55P03": "lock_timeout", // a business row stayed locked past lock_timeout
}

// retryReason names a transient PostgreSQL error that is worth running the
// whole transaction again for, or returns "".
func retryReason(err error) string {
	var pg *pgconn.PgError
	if !errors.As(err, &pg) {
		return ""
	}
	return retryReasons[pg.Code]
}

// public turns a cancelled request, a lost or refused database connection
// or a statement timeout into a 503 the client may retry (nothing was
// applied); other errors pass through unchanged.
func public(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled):
		// The client went away or the server is shutting down.
		return domain.Unavailable("the request was cancelled before it completed; nothing was applied, retry with the same Idempotency-Key")
	case unavailable(err):
		return domain.Unavailable("the database is unreachable or too slow right now; nothing was applied, retry shortly")
	}
	return err
}

func unavailable(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch pg.Code[:2] {
		case "08", "53", "57": // connection exception (PgBouncer's errors too), insufficient resources, operator intervention (57014: statement timeout)
			return true
		}
		// A read-only transaction: a session still on a standby, or on a
		// primary that was demoted, during a failover.
		return pg.Code == "25006"
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	return errors.As(err, &ne) || errors.As(err, &ce) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || pgconn.SafeToRetry(err) || pgconn.Timeout(err)
}

// annotate attaches to final, the error a request's safe flow ends with
// after attempts tries, the failure record of a 5xx: what caused it (last,
// the error of the last try, or the cause already attached) and how many
// tries it took. Other errors pass unchanged.
func annotate(final, last error, attempts int) error {
	if final == nil {
		return nil
	}
	var de *domain.Error
	if errors.As(final, &de) && de.Kind.Status() < 500 {
		return final
	}
	f, ok := domain.FailureOf(last)
	if !ok {
		f = domain.Failure{Cause: cause(last)}
	}
	f.Attempts = attempts
	return domain.WithFailure(final, f)
}

// cause names what err is, for the record of failed attempts.
func cause(err error) string {
	var pg *pgconn.PgError
	var c string
	switch {
	case errors.As(err, &pg):
		c = "SQLSTATE " + pg.Code + ": " + pg.Message
	case errors.Is(err, context.Canceled):
		c = "cancelled: the client went away or the server is stopping"
	case errors.Is(err, context.DeadlineExceeded):
		c = "deadline exceeded"
	default:
		c = err.Error()
	}
	if len(c) > 300 {
		c = c[:300]
	}
	return c
}
