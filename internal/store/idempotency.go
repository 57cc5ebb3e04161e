package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/safeflow/safeflow/internal/domain"
)

const claimKey = `
INSERT INTO idempotency_keys (tenant_id, key, fingerprint, expires_at, method, path)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (tenant_id, key) DO NOTHING`

const selectKey = `
SELECT fingerprint, status_code, content_type, location, etag, body, expires_at <= $3 AS expired
FROM idempotency_keys WHERE tenant_id = $1 AND key = $2`

const releaseExpiredKey = `DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND expires_at <= $3`

var completeKey = guardedOne(`
UPDATE idempotency_keys SET status_code = $3, content_type = $4, location = $5, etag = $6, body = $7
WHERE tenant_id = $1 AND key = $2`, "the idempotency record")

// beginAndClaim begins tx's transaction and claims req's key in one round
// trip: BEGIN, the claim, the read of the record and what lock queues (a
// step's guarded locking reads). A new key returns claimed = true and the
// row stays locked until commit. A key that another transaction holds makes
// the claim wait on its row lock (up to lock_timeout); once that
// transaction commits, the stored response is returned for replay, or
// idempotency_key_reused if the fingerprint differs. If it rolled back, the
// claim succeeds and this request runs. An expired record is released and
// the key claimed again, with lock, in one more round trip.
func (s *Store) beginAndClaim(ctx context.Context, tx *openTx, req domain.Idempotency, lock func(*pgx.Batch, domain.Idempotency)) (domain.Response, bool, error) {
	now := s.now()
	for try := range 3 {
		b := &pgx.Batch{}
		if try == 0 {
			s.queueBegin(b)
		}
		c := s.queueClaim(b, req, now)
		if lock != nil {
			lock(b, req)
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			var pg *pgconn.PgError
			if !c.ran && errors.As(err, &pg) && pg.Code == "55P03" {
				return domain.Response{}, false, keyInUse()
			}
			return domain.Response{}, false, err // a lock timeout after the claim is a business row's: retried
		}
		resp, claimed, again, err := c.outcome(req)
		if !again {
			return resp, claimed, err
		}
		// Expired (release it, then claim again) or purged between the two
		// statements (claim again).
		if c.found {
			if _, err := tx.Exec(ctx, releaseExpiredKey, req.TenantID, req.Key, now); err != nil {
				return domain.Response{}, false, err
			}
		}
	}
	return domain.Response{}, false, fmt.Errorf("store: idempotency key claim did not settle")
}

// keyClaim is the claim of a key and the read of its record, queued on a
// batch; its fields are set once the batch is sent.
type keyClaim struct {
	ran             bool // the claim's statement ran without error
	inserted, found bool
	r               keyRow
}

// queueClaim queues on b the claim of req's key (INSERT … ON CONFLICT DO
// NOTHING, which waits for a transaction holding the key) and the read of
// its record. They must be two statements: under READ COMMITTED each takes
// its own snapshot, and only a statement that starts after the wait sees
// the row the other transaction committed.
func (s *Store) queueClaim(b *pgx.Batch, req domain.Idempotency, now time.Time) *keyClaim {
	c := &keyClaim{}
	b.Queue(claimKey, req.TenantID, req.Key, req.Fingerprint, now.Add(s.opt.IdempotencyTTL), nullable(req.Method), nullable(req.Path)).
		Exec(func(ct pgconn.CommandTag) error { c.ran, c.inserted = true, ct.RowsAffected() == 1; return nil })
	b.Queue(selectKey, req.TenantID, req.Key, now).QueryRow(func(row pgx.Row) error {
		r := &c.r
		err := row.Scan(&r.fingerprint, &r.status, &r.ctype, &r.location, &r.etag, &r.body, &r.expired)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		c.found = err == nil
		return err
	})
	return c
}

// outcome is what the claim found: the key claimed, a finished request's
// answer to replay, a refusal about the key, or again when the record
// expired or vanished between the two statements and must be claimed anew.
func (c *keyClaim) outcome(req domain.Idempotency) (resp domain.Response, claimed, again bool, err error) {
	switch {
	case c.inserted:
		return domain.Response{}, true, false, nil
	case !c.found || c.r.expired:
		return domain.Response{}, false, true, nil
	case !bytes.Equal(c.r.fingerprint, req.Fingerprint):
		return domain.Response{}, false, false, keyReused()
	case c.r.status == nil:
		return domain.Response{}, false, false, fmt.Errorf("store: idempotency key committed without a response")
	}
	return c.r.response(), false, false, nil
}

// keyRow is an idempotency record as read back.
type keyRow struct {
	fingerprint           []byte
	status                *int32
	ctype, location, etag *string
	body                  []byte
	expired               bool
}

// response is the stored answer of a completed record, for replay.
func (r keyRow) response() domain.Response {
	return domain.Response{Status: int(*r.status), ContentType: deref(r.ctype), Location: deref(r.location),
		ETag: deref(r.etag), Body: r.body, Replayed: true}
}

// queueComplete queues the storing of the rendered response on the claimed record.
func queueComplete(b *pgx.Batch, req domain.Idempotency, r domain.Response) {
	b.Queue(completeKey, req.TenantID, req.Key, r.Status, r.ContentType, nullable(r.Location), nullable(r.ETag), r.Body)
}

// A key whose request is still running was claimed by a transaction that
// has not committed, so no read sees it. GetIdempotencyKey asks the way a
// duplicate would: it claims the key, in a transaction it rolls back, with
// a short lock_timeout. A claim that has to wait means a request holds the
// key (in_progress); one that conflicts at once meets a committed record,
// read next; one that succeeds means there is no such key.
const (
	probeLockTimeout = `SET LOCAL lock_timeout = '50ms'`
	probeKey         = `INSERT INTO idempotency_keys (tenant_id, key, fingerprint, expires_at)
		VALUES ($1, $2, '', $3) ON CONFLICT (tenant_id, key) DO NOTHING`
	selectLiveKey = `SELECT key, status_code, method, path, created_at, expires_at
		FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND expires_at > $3`
)

// GetIdempotencyKey returns what the tenant may learn of its live key.
func (s *Store) GetIdempotencyKey(ctx context.Context, tenantID, key string) (domain.IdempotencyKey, error) {
	k := domain.IdempotencyKey{Object: "idempotency_key", Key: key}
	notFound := &domain.Error{Kind: domain.KindNotFound, Code: domain.CodeNotFound,
		Detail: "this tenant has no live idempotency key " + strconv.Quote(key)}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, probeLockTimeout); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, probeKey, tenantID, key, s.now())
		var pg *pgconn.PgError
		switch {
		case errors.As(err, &pg) && pg.Code == "55P03":
			k.Status = domain.KeyInProgress
			return errRollback
		case err != nil:
			return err
		case tag.RowsAffected() == 1:
			return notFound
		}
		var status *int32
		err = tx.QueryRow(ctx, selectLiveKey, tenantID, key, s.now()).Scan(&k.Key, &status, &k.Method, &k.Path, &k.CreatedAt, &k.ExpiresAt)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return notFound // expired
		case err != nil:
			return err
		}
		k.Status = domain.KeyCompleted
		if status == nil { // committed without an answer: not possible, but never claim completed
			k.Status = domain.KeyInProgress
		} else {
			st := int(*status)
			k.ResponseStatus = &st
		}
		k.CreatedAt, k.ExpiresAt = utc(k.CreatedAt), utc(k.ExpiresAt)
		return errRollback
	})
	var de *domain.Error
	switch {
	case errors.Is(err, errRollback), errors.As(err, &de) && de == notFound:
		attempts, aerr := failedAttempts(ctx, s.pool, tenantID, key)
		if aerr != nil {
			return k, public(aerr)
		}
		if de != nil {
			notFound.Attempts = attempts
			return k, notFound
		}
		k.Attempts = append([]domain.FailedAttempt{}, attempts...) // [] rather than null
		return k, nil
	}
	return k, public(err)
}

// errRollback ends a pgx.BeginFunc that only looked, rolling it back.
var errRollback = errors.New("store: roll back")

const purgeExpiredKeys = `
DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM idempotency_keys WHERE expires_at <= $1
    LIMIT $2 FOR UPDATE SKIP LOCKED))`

// PurgeExpiredKeys is the idempotency janitor: it deletes expired
// idempotency records in batches of Options.JanitorBatch rows, each in its
// own short transaction, until none is left or ctx ends. It returns how
// many it deleted. Rows locked by a request that is re-claiming an expired
// key are skipped.
func (s *Store) PurgeExpiredKeys(ctx context.Context) (int64, error) {
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, purgeExpiredKeys, s.now(), s.opt.JanitorBatch)
		if err != nil {
			return total, public(err)
		}
		total += tag.RowsAffected()
		s.opt.Metrics.purgedKeys(tag.RowsAffected())
		if tag.RowsAffected() < int64(s.opt.JanitorBatch) {
			return total, nil
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func keyInUse() *domain.Error {
	return &domain.Error{Kind: domain.KindKeyInUse, Code: domain.CodeIdempotencyKeyInUse,
		Detail: "a request with this Idempotency-Key is still being processed; retry shortly"}
}

func keyReused() *domain.Error {
	return &domain.Error{Kind: domain.KindKeyReused, Code: domain.CodeIdempotencyKeyReused,
		Detail: "this Idempotency-Key was already used with a different request (method, route or body); use a new key"}
}
