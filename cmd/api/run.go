package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
)

const usage = `usage:
  api serve                       run the HTTP API (and the webhook relay unless RELAY_ENABLED=false)
  api relay                       run the webhook relay alone (/healthz and /metrics on HTTP_ADDR)
  api migrate up|down|status      apply, roll back one, or list the schema migrations
  api apikey create --tenant NAME create the tenant if needed and print a new API key
  api verify [--repair]           check the invariants of the books on the live database (read-only);
                                  --repair first rebuilds derived state (cached balances, missing deliveries)
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
	case args[0] == "verify" && len(args) <= 2:
		err = verify(ctx, cfg, args[1:], stdout)
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
