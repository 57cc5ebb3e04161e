package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
)

const usage = `usage:
  api serve                       run the HTTP API (and the webhook relay unless RELAY_ENABLED=false)
  api relay                       run the webhook relay alone (/healthz and /metrics on HTTP_ADDR)
  api migrate up|down|status      apply, roll back one, or list the schema migrations
  api apikey create --tenant NAME create the tenant if needed and print a new API key
  api apikey list --tenant NAME   list the tenant's keys: id, prefix, created, revoked (never the secret)
  api apikey revoke ID            revoke a key: every running server refuses it within 2 s
  api verify [--repair]           check the invariants of the books on the live database (read-only);
                                  --repair first rebuilds derived state (cached balances, missing deliveries)
  api listen [--events a,b] [--print-json] [--api URL] [--addr 127.0.0.1:4242] [--key KEY]
                                  receive the tenant's webhooks here (key: --key or SAFEFLOW_KEY), verify and
                                  print each; Ctrl-C deletes the endpoint (the server needs WEBHOOK_ALLOW_PRIVATE=true)
  api healthcheck                 exit 0 if the server on HTTP_ADDR answers /readyz with 200 (a container's probe)
  api help                        print this (also: api, api --help, api -h)

environment (README, "Configuration", says more):
  DATABASE_URL           required: a libpq URL, e.g. postgres://root@127.0.0.1:5432/safeflow?sslmode=disable
  DATABASE_POOL_MODE     session (default) or transaction (behind PgBouncer's pool_mode=transaction)
  DATABASE_SESSION_URL   a session-capable URL for LISTEN and migrations, behind a transaction pooler
  DATABASE_READ_URL      a streaming replica for reads that may be a little stale
  HTTP_ADDR              :8080
  LOG_LEVEL              info (trace, debug, info, warn, error)
  IDEMPOTENCY_TTL        24h
  DB_MAX_CONNS           16: the API's pool
  HTTP_MAX_IN_FLIGHT     DB_MAX_CONNS: requests under /v1 at once
  HTTP_MAX_QUEUED        4 x HTTP_MAX_IN_FLIGHT: more waiting for a slot
  HTTP_QUEUE_WAIT        500ms: the longest such a wait, then 503
  COALESCE_HOT_ROWS      true: run concurrent requests on one hot account in one transaction
  RELAY_ENABLED          true: api serve runs the webhook relay too
  RELAY_MAX_ATTEMPTS     8
  RELAY_BACKOFF_BASE     1s
  RELAY_BACKOFF_MAX      1h
  RELAY_POLL_ONLY        false: poll instead of LISTEN
  RELAY_POLL_INTERVAL    1s
  DELIVERY_TIMEOUT       10s: one webhook attempt
  WEBHOOK_ALLOW_PRIVATE  false: allow endpoints on private and loopback addresses
  RETENTION_DELIVERED    72h (0 keeps forever)
  RETENTION_DEAD         720h
  RETENTION_EVENTS       2160h
  FAILURE_RETENTION      168h: records of failed attempts
  VERIFY_INTERVAL        1h: periodic verification of the invariants (0: off)
  PPROF_ADDR             serve Go's profiles there (off when empty)`

// run is the whole program; main only supplies the process's context,
// arguments, environment and streams. It returns the exit code: 0 for help,
// 2 for bad usage or configuration, 1 for a failure.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 || len(args) == 1 && (args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
		fmt.Fprintln(stdout, usage)
		return 0
	}
	switch { // these need no database
	case len(args) == 1 && args[0] == "healthcheck": // a container's probe
		return healthcheck(getenv("HTTP_ADDR"), stderr)
	case args[0] == "listen": // a client of the API
		return exitCode(listenForWebhooks(ctx, args[1:], getenv, stdout, stderr), "api listen:", stderr)
	}
	var cmd func(config, zerolog.Logger) error
	switch {
	case args[0] == "serve" && len(args) == 1:
		cmd = func(cfg config, log zerolog.Logger) error { return serve(ctx, cfg, log) }
	case args[0] == "relay" && len(args) == 1:
		cmd = func(cfg config, log zerolog.Logger) error { return runRelay(ctx, cfg, log) }
	case args[0] == "migrate" && len(args) == 2:
		cmd = func(cfg config, _ zerolog.Logger) error { return migrate(ctx, cfg, args[1], stdout) }
	case args[0] == "verify" && len(args) <= 2:
		cmd = func(cfg config, _ zerolog.Logger) error { return verify(ctx, cfg, args[1:], stdout) }
	case args[0] == "apikey" && len(args) >= 2 && args[1] == "create":
		cmd = func(cfg config, _ zerolog.Logger) error { return createAPIKey(ctx, cfg, args[2:], stdout, stderr) }
	case args[0] == "apikey" && len(args) >= 2 && args[1] == "list":
		cmd = func(cfg config, _ zerolog.Logger) error { return listAPIKeys(ctx, cfg, args[2:], stdout, stderr) }
	case args[0] == "apikey" && len(args) >= 2 && args[1] == "revoke":
		cmd = func(cfg config, _ zerolog.Logger) error { return revokeAPIKey(ctx, cfg, args[2:], stdout) }
	default:
		fmt.Fprintf(stderr, "api: unknown command %q\n%s\n", strings.Join(args, " "), usage)
		return 2
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	log := zerolog.New(stderr).Level(cfg.LogLevel).With().Timestamp().Str("service", "safeflow").Logger()
	return exitCode(cmd(cfg, log), "api:", stderr)
}

// exitCode reports err on stderr and returns the exit code: 2 for bad
// usage (said as is), 1 for a failure (after prefix), 0 for none.
func exitCode(err error, prefix string, stderr io.Writer) int {
	var ue usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, err)
		return 2
	case err != nil:
		fmt.Fprintln(stderr, prefix, err)
		return 1
	}
	return 0
}

// healthcheck asks the server on addr (HTTP_ADDR, default :8080), on this
// host, whether it is ready: exit 0 on a 200 from /readyz, 1 otherwise.
// The container image has no shell or curl; this is its probe.
func healthcheck(addr string, stderr io.Writer) int {
	if addr == "" {
		addr = ":8080"
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		fmt.Fprintln(stderr, "config: HTTP_ADDR:", err)
		return 2
	}
	client := &http.Client{Timeout: 2 * time.Second}
	res, err := client.Get("http://" + net.JoinHostPort("127.0.0.1", port) + "/readyz")
	if err != nil {
		fmt.Fprintln(stderr, "api: not ready:", err)
		return 1
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "api: not ready: /readyz answered", res.Status)
		return 1
	}
	return 0
}

// usageError is bad usage or configuration found after loadConfig: exit 2.
type usageError string

func (e usageError) Error() string { return string(e) }

// listen opens HTTP_ADDR.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usageError("config: HTTP_ADDR: " + err.Error())
	}
	return ln, nil
}

// newRegistry is a Prometheus registry with the Go runtime's and the
// process's collectors; each part of the program registers its own on it.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
