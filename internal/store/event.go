package store

import (
	"context"
	"encoding/json"

	"github.com/jackc/pgx/v5"

	"github.com/safeflow/safeflow/internal/domain"
)

// The feed orders events by their feed key, then by insertion, and serves
// only keys older than the oldest transaction still running (the
// snapshot's xmin). The key is the id of the transaction that wrote the
// event, or the key of the aggregate's previous event when that is greater
// (migrations/00005_feed_order.sql), so an aggregate's events come in
// sequence order. Every transaction below xmin has finished, so no event can
// later appear before one already served. A plain "position > after" would
// skip an event whose transaction took its position first and committed
// last. The price: while a transaction is open, the events of younger
// transactions wait for it (at most idle_in_transaction_session_timeout).
//
// One round trip answers both the page and whether after is an event of the
// tenant: a client that has caught up polls with an empty page, and must not
// pay a second query for it. The query always returns one row, with a NULL
// event when the page is empty.
const listEvents = `
SELECT known.ok, e.id, e.payload
FROM (SELECT $2 = '' OR EXISTS (SELECT 1 FROM events WHERE tenant_id = $1 AND id = $2) AS ok) known
LEFT JOIN LATERAL (
    SELECT e.id, e.payload, e.feed_xid, e.position FROM events e
    WHERE e.tenant_id = $1
      AND e.feed_xid < pg_snapshot_xmin(pg_current_snapshot())
      AND ($2 = '' OR (e.feed_xid, e.position) > (SELECT a.feed_xid, a.position FROM events a WHERE a.tenant_id = $1 AND a.id = $2))
    ORDER BY e.feed_xid, e.position LIMIT $3
) e ON true
ORDER BY e.feed_xid, e.position`

type eventRow struct {
	OK      bool    `db:"ok"`
	ID      *string `db:"id"`
	Payload []byte  `db:"payload"`
}

// ListEvents returns the tenant's events after the event p.After (all from
// the start when ""), in the feed's order, as their stored envelopes.
func (s *Store) ListEvents(ctx context.Context, tenantID string, p domain.Page) ([]json.RawMessage, string, error) {
	rows, _ := s.pool.Query(ctx, listEvents, tenantID, p.After, p.Limit+1)
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[eventRow])
	if err != nil {
		return nil, "", public(err)
	}
	if len(rs) == 0 || !rs[0].OK {
		return nil, "", domain.Invalid(domain.FieldError{Field: "after", Message: "is not an event of this tenant"})
	}
	if rs[0].ID == nil {
		rs = nil // caught up
	}
	rs, next := domain.Paginate(rs, p.Limit, func(r eventRow) string { return *r.ID })
	out := make([]json.RawMessage, len(rs))
	for i, r := range rs {
		out[i] = r.Payload
	}
	return out, next, nil
}
