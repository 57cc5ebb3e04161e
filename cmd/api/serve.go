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

	reg := newRegistry()
	st := store.New(pool, store.Options{IdempotencyTTL: cfg.IdempotencyTTL, DeliveryTimeout: cfg.DeliveryTimeout, Metrics: store.NewMetrics(reg)})
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
	ln, err := listen(cfg.HTTPAddr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	log.Info().Str("addr", ln.Addr().String()).Msg("listening")

	jobs := st.Jobs()
	relayMetrics := relay.NewMetrics(reg, pool) // the backlog is worth watching here even without a relay
	stopRelay := func(context.Context) error { return nil }
	if cfg.RelayEnabled {
		stopRelay = startRelay(ctx, pool, cfg, relayMetrics, log)
		jobs = append(jobs, cfg.retention().Jobs(pool, relayMetrics)...)
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
