package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/rs/zerolog"
	"github.com/safeflow/safeflow/internal/relay"
	"github.com/safeflow/safeflow/internal/store"
)

// config is the service configuration, read from the environment once.
type config struct {
	DatabaseURL         string
	DatabasePoolMode    string // session (default) or transaction: DATABASE_URL goes through a transaction pooler
	DatabaseSessionURL  string // a session-capable URL (direct, or a session pool) for LISTEN and migrations
	DatabaseReadURL     string // a streaming replica for reads that may be a little stale
	PprofAddr           string // serve net/http/pprof there (off when empty)
	Coalesce            bool   // run concurrent moves of one account in one transaction (true)
	HTTPAddr            string
	LogLevel            zerolog.Level
	IdempotencyTTL      time.Duration
	RelayEnabled        bool
	RelayMaxAttempts    int
	RelayBackoffBase    time.Duration
	RelayBackoffMax     time.Duration
	DeliveryTimeout     time.Duration
	WebhookAllowPrivate bool
	RelayPollOnly       bool
	RelayPollInterval   time.Duration
	RetainDelivered     time.Duration // 0: keep
	RetainDead          time.Duration
	RetainEvents        time.Duration
	DBMaxConns          int           // the API's pool (16)
	MaxInFlight         int           // requests under /v1 at once (DB_MAX_CONNS)
	MaxQueued           int           // more waiting for a slot (4 × HTTP_MAX_IN_FLIGHT)
	QueueWait           time.Duration // the longest such a wait (500ms)
	VerifyInterval      time.Duration // periodic verification of the invariants (1h; 0: off)
	FailureRetention    time.Duration // records of failed attempts (168h; 0: keep)
}

// configError names the variable at fault, in one line.
type configError struct{ name, msg string }

func (e *configError) Error() string { return "config: " + e.name + ": " + e.msg }

// loadConfig reads the configuration from getenv; the first bad variable is
// reported.
func loadConfig(getenv func(string) string) (config, error) {
	c := config{
		DatabaseURL: getenv("DATABASE_URL"),
		HTTPAddr:    ":8080",
	}
	if c.DatabaseURL == "" {
		return c, &configError{"DATABASE_URL", "is required (a libpq URL such as postgres://root@127.0.0.1:5432/safeflow?sslmode=disable)"}
	}
	if v := getenv("HTTP_ADDR"); v != "" {
		c.HTTPAddr = v
	}
	c.DatabaseSessionURL, c.DatabaseReadURL, c.PprofAddr = getenv("DATABASE_SESSION_URL"), getenv("DATABASE_READ_URL"), getenv("PPROF_ADDR")
	switch c.DatabasePoolMode = getenv("DATABASE_POOL_MODE"); c.DatabasePoolMode {
	case "":
		c.DatabasePoolMode = "session"
	case "session", "transaction":
	default:
		return c, &configError{"DATABASE_POOL_MODE", fmt.Sprintf("%q is not session or transaction (PgBouncer's pool_mode=transaction)", c.DatabasePoolMode)}
	}
	var err error
	if c.LogLevel, err = parseLevel(getenv("LOG_LEVEL")); err != nil {
		return c, err
	}
	durations := []struct {
		name string
		dst  *time.Duration
		def  time.Duration
	}{
		{"IDEMPOTENCY_TTL", &c.IdempotencyTTL, 24 * time.Hour},
		{"RELAY_BACKOFF_BASE", &c.RelayBackoffBase, time.Second},
		{"RELAY_BACKOFF_MAX", &c.RelayBackoffMax, time.Hour},
		{"DELIVERY_TIMEOUT", &c.DeliveryTimeout, 10 * time.Second},
		{"RELAY_POLL_INTERVAL", &c.RelayPollInterval, time.Second},
		{"HTTP_QUEUE_WAIT", &c.QueueWait, 500 * time.Millisecond},
	}
	for _, d := range durations {
		*d.dst = d.def
		if v := getenv(d.name); v != "" {
			if *d.dst, err = time.ParseDuration(v); err != nil || *d.dst <= 0 {
				return c, &configError{d.name, fmt.Sprintf("%q is not a positive Go duration such as 50ms or 24h", v)}
			}
		}
	}
	if c.RelayBackoffMax < c.RelayBackoffBase {
		return c, &configError{"RELAY_BACKOFF_MAX", "must not be less than RELAY_BACKOFF_BASE"}
	}
	bools := []struct {
		name string
		dst  *bool
		def  bool
	}{
		{"RELAY_ENABLED", &c.RelayEnabled, true},
		{"WEBHOOK_ALLOW_PRIVATE", &c.WebhookAllowPrivate, false},
		{"RELAY_POLL_ONLY", &c.RelayPollOnly, false},
		{"COALESCE_HOT_ROWS", &c.Coalesce, true},
	}
	for _, b := range bools {
		*b.dst = b.def
		if v := getenv(b.name); v != "" {
			if *b.dst, err = strconv.ParseBool(v); err != nil {
				return c, &configError{b.name, fmt.Sprintf("%q is not a boolean (true or false)", v)}
			}
		}
	}
	retention := []struct {
		name string
		dst  *time.Duration
		def  time.Duration
	}{
		{"RETENTION_DELIVERED", &c.RetainDelivered, 72 * time.Hour},
		{"RETENTION_DEAD", &c.RetainDead, 30 * 24 * time.Hour},
		{"RETENTION_EVENTS", &c.RetainEvents, 90 * 24 * time.Hour},
		{"VERIFY_INTERVAL", &c.VerifyInterval, time.Hour},
		{"FAILURE_RETENTION", &c.FailureRetention, 7 * 24 * time.Hour},
	}
	for _, d := range retention {
		*d.dst = d.def
		if v := getenv(d.name); v != "" {
			if *d.dst, err = time.ParseDuration(v); err != nil || *d.dst < 0 {
				return c, &configError{d.name, fmt.Sprintf("%q is not a Go duration such as 72h (0 keeps rows forever)", v)}
			}
		}
	}
	ints := []struct {
		name string
		dst  *int
		def  int
	}{
		{"RELAY_MAX_ATTEMPTS", &c.RelayMaxAttempts, 8},
		{"DB_MAX_CONNS", &c.DBMaxConns, 16},
		{"HTTP_MAX_IN_FLIGHT", &c.MaxInFlight, 0}, // derived below
		{"HTTP_MAX_QUEUED", &c.MaxQueued, -1},     // derived below; 0 is no queue
	}
	for _, n := range ints {
		*n.dst = n.def
		if v := getenv(n.name); v != "" {
			min := 1
			if n.name == "HTTP_MAX_QUEUED" {
				min = 0
			}
			if *n.dst, err = strconv.Atoi(v); err != nil || *n.dst < min {
				return c, &configError{n.name, fmt.Sprintf("%q is not an integer of at least %d", v, min)}
			}
		}
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = c.DBMaxConns // an admitted request never waits for a connection
	}
	switch c.MaxQueued {
	case -1:
		c.MaxQueued = 4 * c.MaxInFlight
	case 0:
		c.MaxQueued = -1 // Admission's "none"
	}
	return c, nil
}

func parseLevel(v string) (zerolog.Level, error) {
	if v == "" {
		return zerolog.InfoLevel, nil
	}
	l, err := zerolog.ParseLevel(v)
	if err != nil || l == zerolog.NoLevel {
		return 0, &configError{"LOG_LEVEL", fmt.Sprintf("%q is not one of trace, debug, info, warn, error", v)}
	}
	return l, nil
}

// horizons are how far back the invariants can be checked at now: rows
// older than the idempotency TTL or the shortest retention may have been
// purged by design.
func (c config) horizons(now time.Time) store.Horizons {
	var h store.Horizons
	h.Keys = now.Add(-c.IdempotencyTTL + time.Minute)
	var shortest time.Duration
	for _, r := range []time.Duration{c.RetainDelivered, c.RetainDead, c.RetainEvents} {
		if r > 0 && (shortest == 0 || r < shortest) {
			shortest = r
		}
	}
	if shortest > 0 {
		h.Outbox = now.Add(-shortest + time.Minute)
	}
	return h
}

// Pooled reports whether DATABASE_URL goes through a transaction pooler.
func (c config) Pooled() bool { return c.DatabasePoolMode == "transaction" }

// sessionURL is the URL of a connection that keeps its session (LISTEN,
// migrations): DATABASE_SESSION_URL, or DATABASE_URL when it is not pooled
// by transaction; "" when there is none.
func (c config) sessionURL() string {
	switch {
	case c.DatabaseSessionURL != "":
		return c.DatabaseSessionURL
	case !c.Pooled():
		return c.DatabaseURL
	}
	return ""
}

// retention is how long the relay's finished rows are kept.
func (c config) retention() relay.Retention {
	return relay.Retention{Delivered: c.RetainDelivered, Dead: c.RetainDead, Events: c.RetainEvents}
}
