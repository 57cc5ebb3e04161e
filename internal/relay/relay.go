// Package relay delivers webhooks: it claims due deliveries (rows of
// webhook_deliveries, written by the fan-out trigger of
// migrations/00004_webhooks.sql in each event's transaction), sends each,
// signed, outside any transaction, and records the outcomes. Any number of
// relays, in any number of processes, share the work through the database.
//
// One file per job: relay.go runs the loop, listen.go wakes it, claim.go
// takes work, deliver.go sends, record.go writes outcomes, metrics.go
// exports what happens. retention.go purges finished rows: periodic jobs,
// run beside the relay, not by it.
package relay

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/safeflow/safeflow/internal/netguard"
)

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
	PollOnly     bool          // no LISTEN: behind PgBouncer's transaction pooling without a session URL
	// Listen is the connection LISTEN uses (the pool's when nil): it must
	// keep its session, so not one through a transaction pooler.
	Listen       *pgx.ConnConfig
	AllowPrivate bool // deliver to loopback and private addresses
	Logger       zerolog.Logger
	Metrics      *Metrics // nil: none
}

// Relay delivers pending webhook deliveries.
type Relay struct {
	pool   *pgxpool.Pool
	cfg    Config
	client *http.Client
	log    zerolog.Logger

	quit     chan struct{}
	quitOnce sync.Once
	done     chan struct{}
}

// New returns a relay on pool; start it with Run.
func New(pool *pgxpool.Pool, cfg Config) *Relay {
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
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 32
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
//
// The loop claims as many due deliveries as it has free slots, sends each
// on a goroutine of its own, and hands the outcomes to the recorder; it
// claims again when a slot frees up while more may be due, on a wake-up
// (NOTIFY), and at every poll.
func (r *Relay) Run(ctx context.Context) {
	defer close(r.done)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	wake := make(chan struct{}, 1)
	listening := make(chan struct{})
	if r.cfg.PollOnly {
		close(listening)
	} else {
		go func() { defer close(listening); r.listen(ctx, wake) }()
	}
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
				r.cfg.Metrics.errored("claim")
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
	<-listening
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
