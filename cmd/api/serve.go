package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/safeflow/safeflow"
	apihttp "github.com/safeflow/safeflow/internal/http"
	"github.com/safeflow/safeflow/internal/periodic"
	"github.com/safeflow/safeflow/internal/relay"
	"github.com/safeflow/safeflow/internal/store"
)

// serve runs the HTTP API, its background jobs and, unless RELAY_ENABLED
// is false, a webhook relay, until ctx ends; then it stops accepting
// connections, lets in-flight requests and deliveries finish, and stops
// the jobs.
func serve(ctx context.Context, cfg config, log zerolog.Logger) error {
	// Three pools, so that one kind of work cannot starve another: the
	// requests (admission keeps them within it), the relay and its jobs,
	// and operations (/readyz, the gauges /metrics reads, the janitor).
	pool, err := openPool(ctx, cfg.DatabaseURL, int32(cfg.DBMaxConns), cfg.Pooled(), false)
	if err != nil {
		return err
	}
	defer pool.Close()
	opsPool, err := openPool(ctx, cfg.DatabaseURL, 2, cfg.Pooled(), false)
	if err != nil {
		return err
	}
	defer opsPool.Close()
	readPool := pool
	if cfg.DatabaseReadURL != "" {
		if readPool, err = openPool(ctx, cfg.DatabaseReadURL, int32(cfg.DBMaxConns), cfg.Pooled(), false); err != nil {
			return fmt.Errorf("DATABASE_READ_URL: %w", err)
		}
		defer readPool.Close()
		log.Info().Msg("reads of single resources and lists go to DATABASE_READ_URL")
	}
	mig, err := store.NewMigrator(opsPool)
	if err != nil {
		return err
	}
	defer mig.Close()
	if err := mig.CheckVersion(ctx); err != nil {
		log.Warn().Err(err).Msg("schema not current; /readyz answers 503 until it is")
	}

	reg := newRegistry()
	reg.MustRegister(store.NewPoolCollector("api", pool), store.NewPoolCollector("ops", opsPool), store.NewServerCollector(opsPool))
	if readPool != pool {
		reg.MustRegister(store.NewPoolCollector("read", readPool))
	}
	storeMetrics := store.NewMetrics(reg)
	st := store.New(pool, store.Options{IdempotencyTTL: cfg.IdempotencyTTL, DeliveryTimeout: cfg.DeliveryTimeout, Metrics: storeMetrics,
		PerTransactionTimeouts: cfg.Pooled(), Read: readPool, Coalesce: cfg.Coalesce})
	handler := apihttp.NewHandler(apihttp.Config{
		Store: st, Logger: log, Metrics: apihttp.NewMetrics(reg), OpenAPI: safeflow.OpenAPI,
		WebhookAllowPrivate: cfg.WebhookAllowPrivate,
		Admission:           apihttp.Admission{MaxInFlight: cfg.MaxInFlight, MaxQueued: cfg.MaxQueued, QueueWait: cfg.QueueWait},
		Ready: func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 800*time.Millisecond)
			defer cancel()
			if err := opsPool.Ping(ctx); err != nil {
				return fmt.Errorf("database unreachable: %w", err)
			}
			return mig.CheckVersion(ctx)
		},
	})
	if cfg.PprofAddr != "" {
		startPprof(cfg.PprofAddr, log)
	}
	ln, err := listen(cfg.HTTPAddr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	log.Info().Str("addr", ln.Addr().String()).Msg("listening")

	keep := cfg.FailureRetention
	if keep == 0 {
		keep = -1 // store.Options: forever
	}
	jobs := store.New(opsPool, store.Options{IdempotencyTTL: cfg.IdempotencyTTL, FailureRetention: keep, Metrics: storeMetrics,
		PerTransactionTimeouts: cfg.Pooled()}).Jobs()
	if cfg.VerifyInterval > 0 {
		jobs = append(jobs, store.VerifyJob(opsPool, cfg.VerifyInterval, cfg.horizons, storeMetrics))
	}
	relayMetrics := relay.NewMetrics(reg, opsPool) // the backlog is worth watching here even without a relay
	stopRelay := func(context.Context) error { return nil }
	if cfg.RelayEnabled {
		relayPool, err := openPool(ctx, cfg.DatabaseURL, relayPoolSize, cfg.Pooled(), false)
		if err != nil {
			return err
		}
		defer relayPool.Close()
		reg.MustRegister(store.NewPoolCollector("relay", relayPool))
		stopRelay = startRelay(ctx, relayPool, cfg, relayMetrics, log)
		jobs = append(jobs, cfg.retention().Jobs(relayPool, relayMetrics)...)
	}
	background := periodic.Start(ctx, log, periodic.NewMetrics(reg), jobs...)
	defer background.Stop()

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		_ = stopRelay(context.Background())
		return err
	case <-ctx.Done():
	}
	log.Info().Msg("shutting down: draining in-flight requests and deliveries")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if rerr := stopRelay(sctx); err == nil && rerr != nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info().Msg("stopped")
	return nil
}
