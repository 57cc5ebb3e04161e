package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/safeflow/safeflow/internal/domain"
)

const claimKey = `
INSERT INTO idempotency_keys (tenant_id, key, fingerprint, expires_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id, key) DO NOTHING`

const selectKey = `
SELECT fingerprint, status_code, content_type, location, etag, body, expires_at <= $3 AS expired
FROM idempotency_keys WHERE tenant_id = $1 AND key = $2`

const releaseExpiredKey = `DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND expires_at <= $3`

const completeKey = `
UPDATE idempotency_keys SET status_code = $3, content_type = $4, location = $5, etag = $6, body = $7
WHERE tenant_id = $1 AND key = $2`

// claim inserts the idempotency record for req in tx. A new key returns
// claimed = true and the row stays locked until commit. A key that another
// transaction holds makes the INSERT wait on its row lock (up to
// lock_timeout); once that transaction commits, the stored response is
// returned for replay, or idempotency_key_reused if the fingerprint differs.
// If it rolled back, the INSERT succeeds and this request runs.
//
// The INSERT and the SELECT must be two statements: under READ COMMITTED
// each statement takes its own snapshot, and only a statement that starts
// after the wait sees the row the other transaction committed.
func (s *Store) claim(ctx context.Context, tx pgx.Tx, req domain.Idempotency) (domain.Response, bool, error) {
	now := s.now()
	for range 3 {
		tag, err := tx.Exec(ctx, claimKey, req.TenantID, req.Key, req.Fingerprint, now.Add(s.opt.IdempotencyTTL))
		if err != nil {
			var pg *pgconn.PgError
			if errors.As(err, &pg) && pg.Code == "55P03" {
				return domain.Response{}, false, &domain.Error{Kind: domain.KindKeyInUse, Code: domain.CodeIdempotencyKeyInUse,
					Detail: "a request with this Idempotency-Key is still being processed; retry shortly"}
			}
			return domain.Response{}, false, err
		}
		if tag.RowsAffected() == 1 {
			return domain.Response{}, true, nil
		}
		var (
			fp                    []byte
			status                *int32
			ctype, location, etag *string
			body                  []byte
			expired               bool
		)
		err = tx.QueryRow(ctx, selectKey, req.TenantID, req.Key, now).Scan(&fp, &status, &ctype, &location, &etag, &body, &expired)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			continue // purged between the two statements: claim again
		case err != nil:
			return domain.Response{}, false, err
		case expired:
			if _, err := tx.Exec(ctx, releaseExpiredKey, req.TenantID, req.Key, now); err != nil {
				return domain.Response{}, false, err
			}
			continue
		case !bytes.Equal(fp, req.Fingerprint):
			return domain.Response{}, false, &domain.Error{Kind: domain.KindKeyReused, Code: domain.CodeIdempotencyKeyReused,
				Detail: "this Idempotency-Key was already used with a different request (method, route or body); use a new key"}
		case status == nil:
			return domain.Response{}, false, fmt.Errorf("store: idempotency key committed without a response")
		}
		return domain.Response{Status: int(*status), ContentType: deref(ctype), Location: deref(location),
			ETag: deref(etag), Body: body, Replayed: true}, false, nil
	}
	return domain.Response{}, false, fmt.Errorf("store: idempotency key claim did not settle")
}

// queueComplete queues the storing of the rendered response on the claimed record.
func queueComplete(b *pgx.Batch, req domain.Idempotency, r domain.Response) {
	b.Queue(completeKey, req.TenantID, req.Key, r.Status, r.ContentType, nullable(r.Location), nullable(r.ETag), r.Body).Exec(expectOne)
}

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
