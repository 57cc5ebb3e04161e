package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/safeflow/safeflow/internal/backoff"
	"github.com/safeflow/safeflow/internal/netguard"
)

// Channel is the NOTIFY channel that wakes relays: the fan-out trigger and
// the retry flows send on it in their transactions, so it fires at commit.
const Channel = "safeflow_deliveries"

// Config tunes a Relay. Zero values take the defaults in parentheses.
type Config struct {
	MaxAttempts     int           // attempts before a delivery is dead (8)
	BackoffBase     time.Duration // first retry delay cap (1s)
	BackoffMax      time.Duration // largest retry delay, Retry-After included (1h)
	DeliveryTimeout time.Duration // one HTTP attempt, connection included (10s)
	// Lease is how long a claimed delivery is the claimer's; after it any
	// relay may take it over (3 × DeliveryTimeout, at least 5s).
	Lease        time.Duration
	Concurrency  int           // deliveries in flight, and so the largest claim (32)
	PollInterval time.Duration // claims at least this often, NOTIFY or not (1s)
	PollOnly     bool          // no LISTEN: behind PgBouncer's transaction pooling
	AllowPrivate bool          // deliver to loopback and private addresses
	Retention    Retention
	Logger       zerolog.Logger
	Metrics      *Metrics // nil: none
}

// Retention says how long finished rows are kept. Zero keeps them forever.
type Retention struct {
	Delivered time.Duration // delivered deliveries
	Dead      time.Duration // dead deliveries (kept longer, for replay)
	Events    time.Duration // events no delivery refers to any more
	Every     time.Duration // how often to purge (1m)
	Batch     int           // rows per DELETE (1000)
}

// Relay delivers pending webhook deliveries. Any number of relays, in any
// number of processes, share the work through the database.
type Relay struct {
	pool   *pgxpool.Pool
	cfg    Config
	client *http.Client
	log    zerolog.Logger

	quit     chan struct{}
	quitOnce sync.Once
	done     chan struct{}
}

// NewRelay returns a relay on pool; start it with Run.
func NewRelay(pool *pgxpool.Pool, cfg Config) *Relay {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 8
	}
	def(&cfg.BackoffBase, time.Second)
	def(&cfg.BackoffMax, time.Hour)
	def(&cfg.DeliveryTimeout, 10*time.Second)
	def(&cfg.Lease, max(3*cfg.DeliveryTimeout, 5*time.Second))
	def(&cfg.PollInterval, time.Second)
	def(&cfg.Retention.Every, time.Minute)
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 32
	}
	if cfg.Retention.Batch <= 0 {
		cfg.Retention.Batch = 1000
	}
	dialer := &net.Dialer{Timeout: cfg.DeliveryTimeout, KeepAlive: 30 * time.Second}
	if !cfg.AllowPrivate {
		dialer.Control = netguard.Control // the address actually dialled, after DNS
	}
	transport := &http.Transport{
		Proxy:               nil, // a proxy would hide the destination from the address check
		DialContext:         dialer.DialContext,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        4 * cfg.Concurrency,
		MaxIdleConnsPerHost: cfg.Concurrency,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: cfg.DeliveryTimeout,
	}
	return &Relay{
		pool: pool, cfg: cfg, log: cfg.Logger.With().Str("component", "relay").Logger(),
		client: &http.Client{Transport: transport, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a 3xx is a failed attempt, never followed
		}},
		quit: make(chan struct{}), done: make(chan struct{}),
	}
}

// Run delivers until Shutdown is called or ctx ends. Shutdown lets the
// deliveries in flight finish and records them; the end of ctx abandons
// them (their leases expire and another relay redelivers them).
func (r *Relay) Run(ctx context.Context) error {
	defer close(r.done)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	wake := make(chan struct{}, 1)
	var background sync.WaitGroup // LISTEN and retention, beside the claim loop
	if !r.cfg.PollOnly {
		background.Add(1)
		go func() { defer background.Done(); r.listen(ctx, wake) }()
	}
	background.Add(1)
	go func() { defer background.Done(); r.purgeEvery(ctx) }()
	outcomes := make(chan outcome, r.cfg.Concurrency)
	recorded := make(chan struct{})
	go func() { defer close(recorded); r.recordLoop(ctx, outcomes) }()

	slots := make(chan struct{}, r.cfg.Concurrency)
	freed := make(chan struct{}, 1)
	var inflight sync.WaitGroup
	poll := time.NewTicker(r.cfg.PollInterval)
	defer poll.Stop()

loop:
	for {
		busy := false // every slot taken and more may be due
		if free := cap(slots) - len(slots); free > 0 {
			ds, err := r.claim(ctx, free)
			if err != nil && ctx.Err() == nil {
				r.log.Warn().Err(err).Msg("claim deliveries")
			}
			for _, d := range ds {
				slots <- struct{}{}
				inflight.Add(1)
				go func() {
					defer inflight.Done()
					outcomes <- r.deliver(ctx, d)
					<-slots
					select {
					case freed <- struct{}{}:
					default:
					}
				}()
			}
			busy = len(ds) == free
		} else {
			busy = true
		}
		var more <-chan struct{}
		if busy {
			more = freed
		}
		select {
		case <-ctx.Done():
			break loop
		case <-r.quit:
			break loop
		case <-more:
		case <-wake:
		case <-poll.C:
		}
	}
	inflight.Wait()
	close(outcomes)
	<-recorded
	cancel()
	background.Wait()
	return nil
}

// Shutdown stops claiming, waits for the deliveries in flight and their
// records, and returns when Run has returned or ctx ends.
func (r *Relay) Shutdown(ctx context.Context) error {
	r.quitOnce.Do(func() { close(r.quit) })
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// listen turns notifications into wake-ups on a connection of its own. It
// reconnects after an error; the poll covers the gap, and a wake-up after
// each (re)connection covers what was sent meanwhile.
func (r *Relay) listen(ctx context.Context, wake chan<- struct{}) {
	signal := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	for ctx.Err() == nil {
		err := func() error {
			conn, err := pgx.ConnectConfig(ctx, r.pool.Config().ConnConfig.Copy())
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(ctx))
			if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
				return err
			}
			signal()
			for {
				if _, err := conn.WaitForNotification(ctx); err != nil {
					return err
				}
				signal()
			}
		}()
		if ctx.Err() != nil {
			return
		}
		r.log.Warn().Err(err).Msg("LISTEN connection lost; polling until it is back")
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// claimed is one delivery a relay holds the lease of.
type claimed struct {
	ID             string    `db:"id"`
	Lease          int64     `db:"lease"`
	Attempts       int       `db:"attempts"`
	EventID        string    `db:"event_id"`
	EventCreatedAt time.Time `db:"event_created_at"`
	Payload        []byte    `db:"payload"`
	EndpointID     string    `db:"endpoint_id"`
	URL            string    `db:"url"`
	Secret         string    `db:"secret"`
	EndpointStatus string    `db:"endpoint_status"`
}

// claimDeliveries takes up to $1 due deliveries in one statement (so one
// short transaction): rows other relays hold are skipped, not waited for.
// The lease is the due time moved forward, plus a token that fences the
// outcome. A relay that dies holding a lease leaves a row that becomes due
// again when the lease ends. The attempt is counted here, so a delivery that
// crashes its relay cannot be retried forever.
const claimDeliveries = `
WITH due AS (
    SELECT id FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), c AS (
    UPDATE webhook_deliveries d
    SET next_attempt_at = now() + make_interval(secs => $2), lease = $3, attempts = d.attempts + 1
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.lease, d.attempts, d.event_id, d.endpoint_id
)
SELECT c.id, c.lease, c.attempts, c.event_id, e.created_at AS event_created_at, e.payload,
       c.endpoint_id, w.url, w.secret, w.status AS endpoint_status
FROM c
JOIN events e ON e.id = c.event_id
JOIN webhook_endpoints w ON w.id = c.endpoint_id`

func (r *Relay) claim(ctx context.Context, n int) ([]claimed, error) {
	rows, _ := r.pool.Query(ctx, claimDeliveries, n, r.cfg.Lease.Seconds(), rand.Int64())
	ds, err := pgx.CollectRows(rows, pgx.RowToStructByName[claimed])
	if r.cfg.Metrics != nil && err == nil {
		r.cfg.Metrics.claimed.Observe(float64(len(ds)))
	}
	return ds, err
}

// outcome is the result of one attempt, to record.
type outcome struct {
	id, endpointID string
	lease          int64
	status         string     // pending (retry), delivered or dead
	next           *time.Time // pending: when to try again
	lastError      *string
	code           *int
	at             time.Time // when the attempt ended
	gone           bool      // the receiver answered 410: disable the endpoint
	eventCreatedAt time.Time
}

// deliver makes one attempt, outside any transaction.
func (r *Relay) deliver(ctx context.Context, d claimed) outcome {
	o := outcome{id: d.ID, endpointID: d.EndpointID, lease: d.Lease, eventCreatedAt: d.EventCreatedAt}
	if d.EndpointStatus != "enabled" {
		r.count("skipped")
		return r.dead(o, "not sent: the endpoint is disabled (it answered 410 Gone); replay its dead deliveries to enable it")
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DeliveryTimeout)
	defer cancel()
	ts := time.Now().Unix()
	sig, err := Sign(d.Secret, d.EventID, ts, d.Payload)
	if err != nil {
		return r.dead(o, err.Error())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(d.Payload))
	if err != nil {
		return r.dead(o, "the endpoint URL cannot be requested: "+err.Error())
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "safeflow-webhooks/1")
	h.Set("webhook-id", d.EventID)
	h.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	h.Set("webhook-signature", sig)
	res, err := r.client.Do(req)
	if err != nil {
		result, msg := describe(err, r.cfg.DeliveryTimeout)
		r.count(result)
		return r.retry(o, d.Attempts, msg, 0)
	}
	snippet, _ := io.ReadAll(io.LimitReader(res.Body, 256))
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10)) // lets the connection be reused
	_ = res.Body.Close()
	code := res.StatusCode
	o.code = &code
	r.count(strconv.Itoa(code/100) + "xx")
	msg := fmt.Sprintf("HTTP %d", code)
	if s := strings.TrimSpace(strings.ToValidUTF8(string(snippet), "")); s != "" {
		msg += ": " + s
	}
	switch {
	case code >= 200 && code < 300:
		o.status, o.at = "delivered", time.Now()
		return o
	case code == http.StatusGone:
		o.gone = true
		return r.dead(o, msg+" (410 Gone: the endpoint is now disabled)")
	}
	return r.retry(o, d.Attempts, msg, retryAfter(res.Header.Get("Retry-After"), time.Now()))
}

func (r *Relay) count(result string) {
	if r.cfg.Metrics != nil {
		r.cfg.Metrics.attempts.WithLabelValues(result).Inc()
	}
}

func (r *Relay) dead(o outcome, msg string) outcome {
	o.status, o.lastError, o.at = "dead", &msg, time.Now()
	return o
}

// retry schedules the next attempt after a failed one (capped exponential
// backoff with full jitter, or the receiver's Retry-After), or makes the
// delivery dead when it has had its attempts.
func (r *Relay) retry(o outcome, attempts int, msg string, after time.Duration) outcome {
	if attempts >= r.cfg.MaxAttempts {
		return r.dead(o, fmt.Sprintf("%s (attempt %d of %d: no more attempts)", msg, attempts, r.cfg.MaxAttempts))
	}
	delay := backoff.FullJitter(r.cfg.BackoffBase, r.cfg.BackoffMax, attempts)
	if after > 0 {
		delay = min(after, r.cfg.BackoffMax)
	}
	o.status, o.lastError, o.at = "pending", &msg, time.Now()
	next := o.at.Add(delay)
	o.next = &next
	return o
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// describe names a failed request for last_error and the attempts metric.
func describe(err error, timeout time.Duration) (result, msg string) {
	var ne net.Error
	switch {
	case errors.Is(err, netguard.ErrNotPublic):
		return "refused", "not sent: " + unwrapURL(err).Error()
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return "timeout", fmt.Sprintf("no answer within %s", timeout)
	}
	return "network_error", unwrapURL(err).Error()
}

func unwrapURL(err error) error {
	if u := (*url.Error)(nil); errors.As(err, &u) {
		return u.Err
	}
	return err
}

// recordLoop writes outcomes as they come, many per statement when they
// come together (a group commit), so recording keeps up with delivering.
func (r *Relay) recordLoop(ctx context.Context, in <-chan outcome) {
	for o := range in {
		batch := []outcome{o}
	drain:
		for len(batch) < 256 {
			select {
			case o, ok := <-in:
				if !ok {
					break drain
				}
				batch = append(batch, o)
			default:
				break drain
			}
		}
		r.record(ctx, batch)
	}
}

// recordOutcomes applies outcomes fenced on their lease: a row another relay
// has claimed since (a new lease) or that was deleted is left alone. An
// endpoint that answered 410 is disabled in the same statement.
const recordOutcomes = `
WITH o AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[], $5::text[], $6::int[], $7::timestamptz[], $8::bool[])
        AS o(id, lease, status, next_attempt_at, last_error, code, at, gone)
), done AS (
    UPDATE webhook_deliveries d
    SET status = o.status, next_attempt_at = o.next_attempt_at, lease = NULL,
        last_error = o.last_error, last_status_code = o.code,
        delivered_at = CASE WHEN o.status = 'delivered' THEN o.at END,
        finished_at = CASE WHEN o.status <> 'pending' THEN o.at END
    FROM o
    WHERE d.id = o.id AND d.lease = o.lease AND d.status = 'pending'
    RETURNING d.id, d.endpoint_id, o.gone
), disabled AS (
    UPDATE webhook_endpoints w SET status = 'disabled'
    WHERE w.id IN (SELECT endpoint_id FROM done WHERE gone) AND w.status = 'enabled'
)
SELECT id FROM done`

func (r *Relay) record(ctx context.Context, batch []outcome) {
	n := len(batch)
	ids, leases, statuses := make([]string, n), make([]int64, n), make([]string, n)
	next, errs, codes, at, gone := make([]*time.Time, n), make([]*string, n), make([]*int, n), make([]time.Time, n), make([]bool, n)
	for i, o := range batch {
		ids[i], leases[i], statuses[i], next[i], errs[i], codes[i], at[i], gone[i] = o.id, o.lease, o.status, o.next, o.lastError, o.code, o.at, o.gone
	}
	var kept []string
	var err error
	for try := 0; try < 3; try++ {
		rows, _ := r.pool.Query(ctx, recordOutcomes, ids, leases, statuses, next, errs, codes, at, gone)
		if kept, err = pgx.CollectRows(rows, pgx.RowTo[string]); err == nil || backoff.Sleep(ctx, 100*time.Millisecond) != nil {
			break
		}
	}
	if err != nil {
		// The leases will expire and the deliveries be made again.
		if ctx.Err() == nil {
			r.log.Warn().Err(err).Int("outcomes", n).Msg("record delivery outcomes")
		}
		return
	}
	ok := make(map[string]bool, len(kept))
	for _, id := range kept {
		ok[id] = true
	}
	for _, o := range batch {
		result := o.status
		switch {
		case !ok[o.id]:
			result = "lease_lost"
			r.log.Info().Str("delivery_id", o.id).Msg("delivery outcome not recorded: its lease was lost or it was deleted")
		case o.status == "pending":
			result = "retry"
		case o.gone:
			r.log.Warn().Str("endpoint_id", o.endpointID).Msg("webhook endpoint answered 410 Gone: disabled")
		}
		if m := r.cfg.Metrics; m != nil {
			m.deliveries.WithLabelValues(result).Inc()
			if result == "delivered" {
				m.latency.Observe(o.at.Sub(o.eventCreatedAt).Seconds())
			}
		}
	}
}

// Retention deletes, in small batches that skip rows others hold.
const (
	// The status is a literal, not a parameter, so that the planner can
	// prove the partial index webhook_deliveries_finished applies.
	purgeDelivered = `
DELETE FROM webhook_deliveries WHERE id IN (
    SELECT id FROM webhook_deliveries WHERE status = 'delivered' AND finished_at < now() - make_interval(secs => $1)
    ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)`
	purgeDead = `
DELETE FROM webhook_deliveries WHERE id IN (
    SELECT id FROM webhook_deliveries WHERE status = 'dead' AND finished_at < now() - make_interval(secs => $1)
    ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)`
	purgeEvents = `
DELETE FROM events WHERE id IN (
    SELECT e.id FROM events e
    WHERE e.created_at < now() - make_interval(secs => $1)
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id)
    ORDER BY e.position LIMIT $2 FOR UPDATE SKIP LOCKED)`
)

// purgeEvery applies the retention periods every Retention.Every until ctx
// ends, apart from the claim loop so that deleting never delays delivering.
func (r *Relay) purgeEvery(ctx context.Context) {
	t := time.NewTicker(r.cfg.Retention.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.purge(ctx)
		}
	}
}

// purge applies the retention periods, a few batches per call.
func (r *Relay) purge(ctx context.Context) {
	ret := r.cfg.Retention
	steps := []struct {
		kind  string
		keep  time.Duration
		query string
		args  []any
	}{
		{"delivered", ret.Delivered, purgeDelivered, []any{ret.Delivered.Seconds(), ret.Batch}},
		{"dead", ret.Dead, purgeDead, []any{ret.Dead.Seconds(), ret.Batch}},
		{"events", ret.Events, purgeEvents, []any{ret.Events.Seconds(), ret.Batch}},
	}
	for _, s := range steps {
		if s.keep <= 0 {
			continue
		}
		for i := 0; i < 10; i++ {
			ct, err := r.pool.Exec(ctx, s.query, s.args...)
			if err != nil {
				if ctx.Err() == nil {
					r.log.Warn().Err(err).Str("kind", s.kind).Msg("retention purge")
				}
				return
			}
			if r.cfg.Metrics != nil {
				r.cfg.Metrics.purged.WithLabelValues(s.kind).Add(float64(ct.RowsAffected()))
			}
			if ct.RowsAffected() < int64(ret.Batch) {
				break
			}
		}
	}
}

// Purge applies the retention periods now (Run does it every Retention.Every).
func (r *Relay) Purge(ctx context.Context) { r.purge(ctx) }
