package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/safeflow/safeflow/internal/store"
)

// migrate runs `api migrate up|down|status`.
func migrate(ctx context.Context, cfg config, cmd string, stdout io.Writer) error {
	if cmd != "up" && cmd != "down" && cmd != "status" {
		return usageError("migrate: want up, down or status, got " + cmd)
	}
	pool, err := openPool(ctx, cfg.DatabaseURL, 2, cmd == "up")
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

// createAPIKey runs `api apikey create --tenant NAME`: it prints the new
// secret and nothing else.
func createAPIKey(ctx context.Context, cfg config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("apikey create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tenant := fs.String("tenant", "", "tenant name (created if it does not exist)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || strings.TrimSpace(*tenant) == "" {
		return usageError("usage: api apikey create --tenant NAME")
	}
	pool, err := openPool(ctx, cfg.DatabaseURL, 2, false)
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
