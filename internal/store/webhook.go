package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/safeflow/safeflow/internal/backoff"
	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/outbox"
)

// notifyRelays wakes the relays when the transaction commits ($1: outbox.Channel).
const notifyRelays = `SELECT pg_notify($1, '')`

const endpointColumns = `id, tenant_id, url, event_types, status, created_at`

type endpointRow struct {
	ID         string    `db:"id"`
	TenantID   string    `db:"tenant_id"`
	URL        string    `db:"url"`
	EventTypes []string  `db:"event_types"`
	Status     string    `db:"status"`
	CreatedAt  time.Time `db:"created_at"`
}

func (r endpointRow) endpoint() domain.WebhookEndpoint {
	return domain.WebhookEndpoint{ID: r.ID, Object: "webhook_endpoint", URL: r.URL, EventTypes: r.EventTypes,
		Status: r.Status, CreatedAt: r.CreatedAt.UTC(), TenantID: r.TenantID}
}

const insertEndpoint = `
INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret, status, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)`

// CreateWebhookEndpoint subscribes a URL. The answer, secret included, is
// stored like any other, so a replay of the request shows the same secret.
// It locks nothing the tenant's writers use: the fan-out trigger reads the
// endpoints with a snapshot taken after the request that writes the event
// started, so every request that starts after this one's 201 sees the
// endpoint (migrations/00006_fan_out_without_lock.sql).
func (s *Store) CreateWebhookEndpoint(ctx context.Context, req domain.Request[domain.WebhookEndpoint], in domain.NewWebhookEndpoint) (domain.Response, error) {
	return safeFlow(ctx, s, req, step[domain.WebhookEndpoint]{decide: func(context.Context, pgx.Tx) (domain.WebhookEndpoint, *pgx.Batch, error) {
		e := in.Create(req.TenantID, s.now())
		b := &pgx.Batch{}
		b.Queue(insertEndpoint, e.ID, e.TenantID, e.URL, e.EventTypes, e.Secret, e.Status, e.CreatedAt)
		return e, b, nil
	}})
}

// lockEndpointIfClaimed locks the tenant's endpoint $3 when the transaction claimed
// its key (ifClaimed). Changing an endpoint locks nothing else: the
// requests of the tenant that write events only read endpoints.
const lockEndpointIfClaimed = `SELECT ` + endpointColumns + ` FROM webhook_endpoints WHERE tenant_id = $1 AND id = $3` + ifClaimed + ` FOR UPDATE`

var (
	updateEndpoint = guardedOne(`
UPDATE webhook_endpoints SET url = $3, event_types = $4, status = $5,
    event_types_changed_at = CASE WHEN event_types IS DISTINCT FROM $4 THEN $6 ELSE event_types_changed_at END
WHERE tenant_id = $1 AND id = $2`, "a webhook endpoint")
	rotateEndpointSecret = guardedOne(`
UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_expires_at = $4, secret = $3
WHERE tenant_id = $1 AND id = $2`, "a webhook endpoint")
)

// endpointStep locks the tenant's endpoint id and decides with change on it.
func endpointStep(id string, change func(e domain.WebhookEndpoint, b *pgx.Batch) domain.WebhookEndpoint) step[domain.WebhookEndpoint] {
	var locked []endpointRow
	return step[domain.WebhookEndpoint]{
		lock: func(b *pgx.Batch, k domain.Idempotency) {
			if domain.ValidID(domain.PrefixEndpoint, id) {
				queueRows(b, &locked, lockEndpointIfClaimed, k.TenantID, k.Key, id)
			}
		},
		decide: func(context.Context, pgx.Tx) (domain.WebhookEndpoint, *pgx.Batch, error) {
			if len(locked) != 1 {
				return domain.WebhookEndpoint{}, nil, domain.NotFound("webhook endpoint", id)
			}
			b := &pgx.Batch{}
			return change(locked[0].endpoint(), b), b, nil
		},
	}
}

// UpdateWebhookEndpoint changes the tenant's endpoint id (PATCH): its URL,
// its event types, its status. A disabled endpoint is sent nothing: its
// deliveries end dead, to replay once it is enabled again.
func (s *Store) UpdateWebhookEndpoint(ctx context.Context, req domain.Request[domain.WebhookEndpoint], id string, c domain.EndpointChange) (domain.Response, error) {
	return safeFlow(ctx, s, req, endpointStep(id, func(e domain.WebhookEndpoint, b *pgx.Batch) domain.WebhookEndpoint {
		e = c.Apply(e)
		b.Queue(updateEndpoint, e.TenantID, e.ID, e.URL, e.EventTypes, e.Status, s.now())
		return e
	}))
}

// RotateWebhookSecret gives the tenant's endpoint id a new signing secret,
// shown in the answer (stored, like a creation's, so a replay shows the
// same one). The previous secret keeps signing deliveries, beside the new
// one, for overlap.
func (s *Store) RotateWebhookSecret(ctx context.Context, req domain.Request[domain.WebhookEndpoint], id string, overlap time.Duration) (domain.Response, error) {
	return safeFlow(ctx, s, req, endpointStep(id, func(e domain.WebhookEndpoint, b *pgx.Batch) domain.WebhookEndpoint {
		e.Secret = domain.NewWebhookSecret()
		b.Queue(rotateEndpointSecret, e.TenantID, e.ID, e.Secret, s.now().Add(overlap))
		return e
	}))
}

const selectEndpoint = `SELECT ` + endpointColumns + ` FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2`

// GetWebhookEndpoint returns the tenant's endpoint id, without its secret.
func (s *Store) GetWebhookEndpoint(ctx context.Context, tenantID, id string) (domain.WebhookEndpoint, error) {
	e, err := getEndpoint(ctx, s.opt.Read, tenantID, id, selectEndpoint)
	return e, public(err)
}

func getEndpoint(ctx context.Context, q querier, tenantID, id, query string) (domain.WebhookEndpoint, error) {
	r, err := findOne[endpointRow](ctx, q, query, "webhook endpoint", domain.PrefixEndpoint, tenantID, id)
	if err != nil {
		return domain.WebhookEndpoint{}, err
	}
	return r.endpoint(), nil
}

const listEndpoints = `SELECT ` + endpointColumns + ` FROM webhook_endpoints
WHERE tenant_id = $1 AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3`

// ListWebhookEndpoints returns a page of the tenant's endpoints, newest first.
func (s *Store) ListWebhookEndpoints(ctx context.Context, tenantID string, p domain.Page) ([]domain.WebhookEndpoint, string, error) {
	rows, _ := s.opt.Read.Query(ctx, listEndpoints, tenantID, p.After, p.Limit+1)
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[endpointRow])
	if err != nil {
		return nil, "", public(err)
	}
	out := make([]domain.WebhookEndpoint, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.endpoint())
	}
	out, next := domain.Paginate(out, p.Limit, func(e domain.WebhookEndpoint) string { return e.ID })
	return out, next, nil
}

const (
	// The deliveries an attempt is under way for (a relay holds their
	// lease) stay until the relay records the attempt; the rest go now.
	deleteEndpointDeliveries = `DELETE FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2
		AND NOT (status = 'pending' AND lease IS NOT NULL AND next_attempt_at > now())`
	deleteEndpoint = `DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2`
	// attemptsUnderWay removes what has been recorded since and counts
	// what is still under way.
	attemptsUnderWay = `WITH recorded AS (` + deleteEndpointDeliveries + `)
		SELECT count(*) FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2
		AND status = 'pending' AND lease IS NOT NULL AND next_attempt_at > now()`
)

// DeleteWebhookEndpoint removes the endpoint and its deliveries: nothing
// more is sent to it, including what was still pending or dead. It answers
// once nothing is being sent to it either: it waits for the attempts that
// relays had under way (their outcome, recorded, removes the row), at most
// Options.DeliveryTimeout, the longest an attempt lasts. A delivery that an
// event transaction still inserts for it afterwards (it read the endpoint
// before the delete) is removed unsent by the relay that claims it.
// Nothing of this makes another request of the tenant wait.
func (s *Store) DeleteWebhookEndpoint(ctx context.Context, tenantID, id string) error {
	if !domain.ValidID(domain.PrefixEndpoint, id) {
		return domain.NotFound("webhook endpoint", id)
	}
	if err := s.retrying(ctx, func() error { return s.deleteEndpoint(ctx, tenantID, id) }); err != nil {
		return err
	}
	deadline := time.Now().Add(s.opt.DeliveryTimeout)
	for {
		var n int
		if err := s.pool.QueryRow(ctx, attemptsUnderWay, tenantID, id).Scan(&n); err != nil {
			return public(err)
		}
		if n == 0 || time.Now().After(deadline) {
			return nil
		}
		if err := backoff.Sleep(ctx, 20*time.Millisecond); err != nil {
			return public(err)
		}
	}
}

// deleteEndpoint is one try of DeleteWebhookEndpoint's transaction, which
// locks deliveries before their endpoint (see the lock order below). If
// its COMMIT's reply is lost, it looks whether the endpoint is gone.
func (s *Store) deleteEndpoint(ctx context.Context, tenantID, id string) error {
	tx, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	b := &pgx.Batch{}
	b.Queue(deleteEndpointDeliveries, tenantID, id)
	var found bool
	b.Queue(deleteEndpoint, tenantID, id).Exec(func(ct pgconn.CommandTag) error {
		found = ct.RowsAffected() == 1
		return nil
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	if !found {
		return domain.NotFound("webhook endpoint", id)
	}
	if err := tx.Commit(context.WithoutCancel(ctx)); err != nil {
		return s.learnOutcome(ctx, err, func(ctx context.Context) (committed, known bool, err error) {
			return s.endpointGone(ctx, tenantID, id)
		})
	}
	return nil
}

// lockEndpoint waits for a transaction that holds the endpoint's row (a
// delete whose COMMIT may still be under way) to end.
const lockEndpoint = `SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2 FOR UPDATE)`

// endpointGone tells whether a delete whose COMMIT's reply was lost
// committed. known is false while the old transaction still holds the row.
func (s *Store) endpointGone(ctx context.Context, tenantID, id string) (gone, known bool, err error) {
	tx, err := s.begin(ctx)
	if err != nil {
		return false, false, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var exists bool
	if err := tx.QueryRow(ctx, lockEndpoint, tenantID, id).Scan(&exists); err != nil {
		return false, false, err
	}
	return !exists, true, nil
}

const deliveryColumns = `id, event_id, endpoint_id, status, attempts, last_error, last_status_code,
	CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at, delivered_at, created_at`

type deliveryRow struct {
	ID             string     `db:"id"`
	EventID        string     `db:"event_id"`
	EndpointID     string     `db:"endpoint_id"`
	Status         string     `db:"status"`
	Attempts       int        `db:"attempts"`
	LastError      *string    `db:"last_error"`
	LastStatusCode *int       `db:"last_status_code"`
	NextAttemptAt  *time.Time `db:"next_attempt_at"`
	DeliveredAt    *time.Time `db:"delivered_at"`
	CreatedAt      time.Time  `db:"created_at"`
}

func (r deliveryRow) delivery() domain.Delivery {
	return domain.Delivery{ID: r.ID, Object: "webhook_delivery", EventID: r.EventID, EndpointID: r.EndpointID,
		Status: r.Status, Attempts: r.Attempts, LastError: r.LastError, LastStatusCode: r.LastStatusCode,
		NextAttemptAt: utc(r.NextAttemptAt), DeliveredAt: utc(r.DeliveredAt), CreatedAt: r.CreatedAt.UTC()}
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// Three shapes of the list, one per index: an endpoint's deliveries, the
// undelivered ones of a status, or all of the tenant's.
const (
	listDeliveriesSelect   = `SELECT ` + deliveryColumns + ` FROM webhook_deliveries WHERE tenant_id = $1 AND ($2 = '' OR id < $2) `
	listEndpointDeliveries = listDeliveriesSelect + `AND endpoint_id = $4 AND ($3 = '' OR status = $3) ORDER BY endpoint_id DESC, id DESC LIMIT $5`
	listOpenDeliveries     = listDeliveriesSelect + `AND status = $3 AND status <> 'delivered' AND $4 = '' ORDER BY status DESC, id DESC LIMIT $5`
	listTenantDeliveries   = listDeliveriesSelect + `AND ($3 = '' OR status = $3) AND $4 = '' ORDER BY id DESC LIMIT $5`
)

// ListDeliveries returns a page of the tenant's deliveries, newest first.
func (s *Store) ListDeliveries(ctx context.Context, tenantID string, f domain.DeliveryFilter, p domain.Page) ([]domain.Delivery, string, error) {
	q := listTenantDeliveries
	switch {
	case f.EndpointID != "":
		q = listEndpointDeliveries
	case f.Status == domain.DeliveryPending || f.Status == domain.DeliveryDead:
		q = listOpenDeliveries
	}
	rows, _ := s.opt.Read.Query(ctx, q, tenantID, p.After, f.Status, f.EndpointID, p.Limit+1)
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[deliveryRow])
	if err != nil {
		return nil, "", public(err)
	}
	out := make([]domain.Delivery, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.delivery())
	}
	out, next := domain.Paginate(out, p.Limit, func(d domain.Delivery) string { return d.ID })
	return out, next, nil
}

// lockDelivery locks the tenant's delivery $3 when the transaction claimed
// its key (ifClaimed).
const lockDelivery = `SELECT ` + deliveryColumns + ` FROM webhook_deliveries WHERE tenant_id = $1 AND id = $3` + ifClaimed + ` FOR UPDATE`

// A retried delivery keeps its id, event (so its webhook-id) and last error;
// its attempts start again.
const reviveDeliveries = `
UPDATE webhook_deliveries
SET status = 'pending', attempts = 0, next_attempt_at = $3, finished_at = NULL, lease = NULL, replays = replays + 1
WHERE tenant_id = $1 AND id = ANY ($2) AND status = 'dead'`

// reviveDelivery is reviveDeliveries for the one dead delivery $2 its
// transaction locked, checked on the server (guardedOne).
var reviveDelivery = guardedOne(`
UPDATE webhook_deliveries
SET status = 'pending', attempts = 0, next_attempt_at = $3, finished_at = NULL, lease = NULL, replays = replays + 1
WHERE tenant_id = $1 AND id = $2 AND status = 'dead'`, "a dead delivery")

const enableEndpoint = `UPDATE webhook_endpoints SET status = 'enabled' WHERE tenant_id = $1 AND id = $2 AND status = 'disabled'`

// RetryDelivery makes a dead delivery pending again and wakes the relays.
// Its endpoint is enabled again if a 410 had disabled it: retrying says the
// receiver is back.
func (s *Store) RetryDelivery(ctx context.Context, req domain.Request[domain.Delivery], id string) (domain.Response, error) {
	var locked []deliveryRow
	return safeFlow(ctx, s, req, step[domain.Delivery]{
		lock: func(b *pgx.Batch, k domain.Idempotency) {
			if domain.ValidID(domain.PrefixDelivery, id) {
				queueRows(b, &locked, lockDelivery, k.TenantID, k.Key, id)
			}
		},
		decide: func(context.Context, pgx.Tx) (domain.Delivery, *pgx.Batch, error) {
			if len(locked) != 1 {
				return domain.Delivery{}, nil, domain.NotFound("webhook delivery", id)
			}
			d, err := locked[0].delivery().Retry(s.now())
			if err != nil {
				return domain.Delivery{}, nil, err
			}
			b := &pgx.Batch{}
			b.Queue(reviveDelivery, req.TenantID, d.ID, *d.NextAttemptAt)
			b.Queue(enableEndpoint, req.TenantID, d.EndpointID)
			b.Queue(notifyRelays, outbox.Channel)
			return d, b, nil
		},
	})
}

// Lock order of the webhook flows: deliveries (ascending id, when several)
// before their endpoint. Retry, replay and the relay's outcome (which may
// disable an endpoint) all go that way, so they cannot wait for each other
// in a cycle; deleting an endpoint locks deliveries before the endpoint as
// well.
const (
	readEndpointIfClaimed = `SELECT ` + endpointColumns + ` FROM webhook_endpoints WHERE tenant_id = $1 AND id = $3` + ifClaimed
	lockDeadOfTarget      = `SELECT id FROM webhook_deliveries WHERE tenant_id = $1 AND status = 'dead' AND endpoint_id = $3` + ifClaimed + ` ORDER BY id FOR UPDATE`
)

type idRow struct {
	ID string `db:"id"`
}

// ReplayDead makes every dead delivery of the endpoint pending again (with
// its webhook-id kept) and enables the endpoint. Only dead rows move, so
// replaying again moves nothing new. The endpoint is read, not locked: if it
// is deleted meanwhile, its deliveries go with it and the update finds none.
func (s *Store) ReplayDead(ctx context.Context, req domain.Request[domain.Replay], endpointID string) (domain.Response, error) {
	var endpoints []endpointRow
	var dead []idRow
	return safeFlow(ctx, s, req, step[domain.Replay]{
		lock: func(b *pgx.Batch, k domain.Idempotency) {
			if domain.ValidID(domain.PrefixEndpoint, endpointID) {
				queueRows(b, &endpoints, readEndpointIfClaimed, k.TenantID, k.Key, endpointID)
				queueRows(b, &dead, lockDeadOfTarget, k.TenantID, k.Key, endpointID)
			}
		},
		decide: func(context.Context, pgx.Tx) (domain.Replay, *pgx.Batch, error) {
			if len(endpoints) != 1 {
				return domain.Replay{}, nil, domain.NotFound("webhook endpoint", endpointID)
			}
			ids := make([]string, len(dead))
			for i, r := range dead {
				ids[i] = r.ID
			}
			b := &pgx.Batch{}
			b.Queue(enableEndpoint, req.TenantID, endpointID)
			if len(ids) > 0 {
				b.Queue(reviveDeliveries, req.TenantID, ids, s.now())
				b.Queue(notifyRelays, outbox.Channel)
			}
			return domain.Replay{Object: "webhook_replay", EndpointID: endpointID, Replayed: len(ids)}, b, nil
		},
	})
}
