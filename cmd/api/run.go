package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/safeflow/safeflow"
	apihttp "github.com/safeflow/safeflow/internal/http"
	"github.com/safeflow/safeflow/internal/relay"
	"github.com/safeflow/safeflow/internal/store"
)

const usage = `usage:
  api serve                       run the HTTP API (and the webhook relay unless RELAY_ENABLED=false)
  api relay                       run the webhook relay alone (/healthz and /metrics on HTTP_ADDR)
  api migrate up|down|status      apply, roll back one, or list the schema migrations
  api apikey create --tenant NAME create the tenant if needed and print a new API key
configuration is read from the environment; DATABASE_URL is required`

// run is the whole program; main only supplies the process's context,
// arguments, environment and streams. It returns the exit code: 2 for bad
// usage or configuration, 1 for a failure.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	log := zerolog.New(stderr).Level(cfg.LogLevel).With().Timestamp().Str("service", "safeflow").Logger()

	switch {
	case args[0] == "serve" && len(args) == 1:
		err = serve(ctx, cfg, log)
	case args[0] == "relay" && len(args) == 1:
		err = runRelay(ctx, cfg, log)
	case args[0] == "migrate" && len(args) == 2:
		err = migrate(ctx, cfg, args[1], stdout)
	case args[0] == "apikey" && len(args) >= 2 && args[1] == "create":
		err = createAPIKey(ctx, cfg, args[2:], stdout, stderr)
	default:
		fmt.Fprintln(stderr, usage)
		return 2
	}
	var ue usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, err)
		return 2
	case err != nil:
		fmt.Fprintln(stderr, "api:", err)
		return 1
	}
	return 0
}

type usageError string

func (e usageError) Error() string { return string(e) }

// openPool connects to the database with the safe flow's session settings.
// With create, a missing database is created first.
func openPool(ctx context.Context, url string, create bool) (*pgxpool.Pool, error) {
	pc, err := store.PoolConfig(url, 16)
	if err != nil {
		return nil, usageError("config: DATABASE_URL: " + err.Error())
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, err
	}
	err = pool.Ping(ctx)
	var pg *pgconn.PgError
	if create && errors.As(err, &pg) && pg.Code == "3D000" {
		pool.Close()
		if err := createDatabase(ctx, pc.ConnConfig); err != nil {
			return nil, err
		}
		return openPool(ctx, url, false)
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	return pool, nil
}

// createDatabase creates cc's database, connecting to "postgres" to do so.
func createDatabase(ctx context.Context, cc *pgx.ConnConfig) error {
	admin := cc.Copy()
	name := admin.Database
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("create database %q: %w", name, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		var pg *pgconn.PgError
		if !errors.As(err, &pg) || pg.Code != "42P04" { // created meanwhile by someone else
			return fmt.Errorf("create database %q: %w", name, err)
		}
	}
	return nil
}

func migrate(ctx context.Context, cfg config, cmd string, stdout io.Writer) error {
	if cmd != "up" && cmd != "down" && cmd != "status" {
		return usageError("migrate: want up, down or status, got " + cmd)
	}
	pool, err := openPool(ctx, cfg.DatabaseURL, cmd == "up")
	if err != nil {
		return err
	}
	defer pool.Close()
	m, err := store.NewMigrator(pool)
	if err != nil {
		return err
	}
	defer m.Close()
	switch cmd {
	case "up":
		res, err := m.Up(ctx)
		for _, r := range res {
			fmt.Fprintf(stdout, "applied %s (%s)\n", r.Source.Path, r.Duration.Round(time.Millisecond))
		}
		return err
	case "down":
		r, err := m.Down(ctx)
		if r != nil {
			fmt.Fprintf(stdout, "rolled back %s\n", r.Source.Path)
		}
		return err
	}
	st, err := m.Status(ctx)
	for _, s := range st {
		applied := "pending"
		if s.State == "applied" {
			applied = "applied " + s.AppliedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(stdout, "%05d %-40s %s\n", s.Source.Version, s.Source.Path, applied)
	}
	return err
}

func createAPIKey(ctx context.Context, cfg config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("apikey create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tenant := fs.String("tenant", "", "tenant name (created if it does not exist)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || strings.TrimSpace(*tenant) == "" {
		return usageError("usage: api apikey create --tenant NAME")
	}
	pool, err := openPool(ctx, cfg.DatabaseURL, false)
	if err != nil {
		return err
	}
	defer pool.Close()
	secret, err := store.New(pool, store.Options{}).CreateAPIKey(ctx, strings.TrimSpace(*tenant))
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, secret)
	return nil
}

// serve runs the HTTP API and the idempotency janitor until ctx ends, then
// stops accepting connections and lets in-flight requests finish.
func serve(ctx context.Context, cfg config, log zerolog.Logger) error {
	pool, err := openPool(ctx, cfg.DatabaseURL, false)
	if err != nil {
		return err
	}
	defer pool.Close()
	mig, err := store.NewMigrator(pool)
	if err != nil {
		return err
	}
	defer mig.Close()
	if err := mig.CheckVersion(ctx); err != nil {
		log.Warn().Err(err).Msg("schema not current; /readyz answers 503 until it is")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	retries := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "safeflow_tx_retries_total",
		Help: "Safe-flow transactions run again after a transient PostgreSQL error, by reason."}, []string{"reason"})
	purged := prometheus.NewCounter(prometheus.CounterOpts{Name: "safeflow_idempotency_keys_purged_total",
		Help: "Expired idempotency records deleted by the janitor."})
	reg.MustRegister(retries, purged)
	for _, r := range []string{"serialization_failure", "deadlock", "lock_timeout"} {
		retries.WithLabelValues(r) // exported at 0 from the start
	}

	st := store.New(pool, store.Options{IdempotencyTTL: cfg.IdempotencyTTL, OnRetry: func(r string) { retries.WithLabelValues(r).Inc() }})
	handler := apihttp.NewHandler(apihttp.Config{
		Store: st, Logger: log, Metrics: apihttp.NewMetrics(reg), OpenAPI: safeflow.OpenAPI,
		WebhookAllowPrivate: cfg.WebhookAllowPrivate,
		Ready: func(ctx context.Context) error {
			if err := pool.Ping(ctx); err != nil {
				return fmt.Errorf("database unreachable: %w", err)
			}
			return mig.CheckVersion(ctx)
		},
	})

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return usageError("config: HTTP_ADDR: " + err.Error())
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	log.Info().Str("addr", ln.Addr().String()).Msg("listening")

	jctx, stopJanitor := context.WithCancel(context.WithoutCancel(ctx))
	janitorDone := make(chan struct{})
	go func() {
		defer close(janitorDone)
		janitor(jctx, st, purged, log)
	}()
	stopRelay := func(context.Context) error { return nil }
	if cfg.RelayEnabled {
		stopRelay = startRelay(ctx, pool, cfg, reg, log)
	} else {
		relay.NewMetrics(reg, pool) // the backlog is worth watching from here too
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		stopJanitor()
		<-janitorDone
		_ = stopRelay(context.Background())
		return err
	case <-ctx.Done():
	}
	log.Info().Msg("shutting down: draining in-flight requests and deliveries")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	stopJanitor()
	<-janitorDone
	if rerr := stopRelay(sctx); err == nil && rerr != nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info().Msg("stopped")
	return nil
}

// startRelay runs a webhook relay in the background. The returned function
// stops it: no new claims, the deliveries in flight finish and are recorded
// (or, if ctx ends first, are abandoned to their leases).
func startRelay(ctx context.Context, pool *pgxpool.Pool, cfg config, reg prometheus.Registerer, log zerolog.Logger) func(context.Context) error {
	r := relay.New(pool, relay.Config{
		MaxAttempts: cfg.RelayMaxAttempts, BackoffBase: cfg.RelayBackoffBase, BackoffMax: cfg.RelayBackoffMax,
		DeliveryTimeout: cfg.DeliveryTimeout, PollInterval: cfg.RelayPollInterval, PollOnly: cfg.RelayPollOnly,
		AllowPrivate: cfg.WebhookAllowPrivate, Logger: log, Metrics: relay.NewMetrics(reg, pool),
		Retention: relay.Retention{Delivered: cfg.RetainDelivered, Dead: cfg.RetainDead, Events: cfg.RetainEvents},
	})
	rctx, kill := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(rctx)
	}()
	log.Info().Bool("poll_only", cfg.RelayPollOnly).Msg("webhook relay started")
	return func(sctx context.Context) error {
		err := r.Shutdown(sctx)
		kill() // after a graceful Shutdown this only releases the context
		<-done
		if err != nil {
			return fmt.Errorf("relay: deliveries still in flight were abandoned to their leases: %w", err)
		}
		return nil
	}
}

// runRelay runs the webhook relay alone, with /healthz and /metrics on
// HTTP_ADDR, until ctx ends; then it finishes the deliveries in flight.
func runRelay(ctx context.Context, cfg config, log zerolog.Logger) error {
	pool, err := openPool(ctx, cfg.DatabaseURL, false)
	if err != nil {
		return err
	}
	defer pool.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return usageError("config: HTTP_ADDR: " + err.Error())
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info().Str("addr", ln.Addr().String()).Msg("relay listening for /healthz and /metrics")

	stop := startRelay(ctx, pool, cfg, reg, log)
	<-ctx.Done()
	log.Info().Msg("shutting down: finishing deliveries in flight")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = stop(sctx)
	_ = srv.Shutdown(sctx)
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info().Msg("stopped")
	return nil
}

// janitor purges expired idempotency records every minute, in small batches.
func janitor(ctx context.Context, st *store.Store, purged prometheus.Counter, log zerolog.Logger) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		n, err := st.PurgeExpiredKeys(ctx, 500)
		purged.Add(float64(n))
		if err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Msg("idempotency janitor")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
