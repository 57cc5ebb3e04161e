package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/safeflow/safeflow/internal/periodic"
	"github.com/safeflow/safeflow/internal/relay"
	"github.com/safeflow/safeflow/internal/store"
)

// runRelay runs `api relay`: a webhook relay and the retention jobs alone,
// with /healthz and /metrics on HTTP_ADDR, until ctx ends; then it
// finishes the deliveries in flight.
func runRelay(ctx context.Context, cfg config, log zerolog.Logger) error {
	pool, err := openPool(ctx, cfg.DatabaseURL, relayPoolSize, cfg.Pooled(), false)
	if err != nil {
		return err
	}
	defer pool.Close()
	reg := newRegistry()
	reg.MustRegister(store.NewPoolCollector("relay", pool), store.NewServerCollector(pool))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := listen(cfg.HTTPAddr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info().Str("addr", ln.Addr().String()).Msg("relay listening for /healthz and /metrics")

	metrics := relay.NewMetrics(reg, pool)
	stop := startRelay(ctx, pool, cfg, metrics, log)
	background := periodic.Start(ctx, log, periodic.NewMetrics(reg), cfg.retention().Jobs(pool, metrics)...)
	defer background.Stop()
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

// relayPoolSize is the relay's own pool: its LISTEN connection, claims,
// records and the retention jobs, apart from the API's requests.
const relayPoolSize = 4

// startRelay runs a webhook relay in the background. The returned function
// stops it: no new claims, the deliveries in flight finish and are recorded
// (or, if ctx ends first, are abandoned to their leases).
func startRelay(ctx context.Context, pool *pgxpool.Pool, cfg config, m *relay.Metrics, log zerolog.Logger) func(context.Context) error {
	rc := relay.Config{
		MaxAttempts: cfg.RelayMaxAttempts, BackoffBase: cfg.RelayBackoffBase, BackoffMax: cfg.RelayBackoffMax,
		DeliveryTimeout: cfg.DeliveryTimeout, PollInterval: cfg.RelayPollInterval, PollOnly: cfg.RelayPollOnly,
		AllowPrivate: cfg.WebhookAllowPrivate, Logger: log, Metrics: m,
	}
	switch url := cfg.sessionURL(); {
	case rc.PollOnly:
	case url == "":
		rc.PollOnly = true
		log.Warn().Dur("poll_interval", cfg.RelayPollInterval).Msg("webhook relay polls: LISTEN needs a session, and DATABASE_URL goes through a transaction pooler; set DATABASE_SESSION_URL for instant wake-ups")
	default:
		lc, err := pgx.ParseConfig(url)
		if err != nil {
			log.Warn().Err(err).Msg("DATABASE_SESSION_URL cannot be parsed; the relay polls")
			rc.PollOnly = true
			break
		}
		rc.Listen = lc
	}
	r := relay.New(pool, rc)
	rctx, kill := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(rctx)
	}()
	log.Info().Bool("poll_only", rc.PollOnly).Msg("webhook relay started")
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
