package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/safeflow/safeflow/internal/store"
)

// migrate runs `api migrate up|down|status`.
func migrate(ctx context.Context, cfg config, cmd string, stdout io.Writer) error {
	if cmd != "up" && cmd != "down" && cmd != "status" {
		return usageError("migrate: want up, down or status, got " + cmd)
	}
	url := cfg.sessionURL()
	if url == "" {
		return usageError("config: DATABASE_SESSION_URL: migrate needs a session connection, and DATABASE_URL goes through a transaction pooler " +
			"(DATABASE_POOL_MODE=transaction): set DATABASE_SESSION_URL to the database directly (or through a session pool)")
	}
	pool, err := openPool(ctx, url, 2, false, cmd == "up")
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
	return withStore(ctx, cfg, func(st *store.Store) error {
		secret, err := st.CreateAPIKey(ctx, strings.TrimSpace(*tenant))
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, secret)
		return nil
	})
}

// listAPIKeys runs `api apikey list --tenant NAME`: one line per key, oldest
// first: id, prefix, created, revoked ("-" while valid). Never the secret.
func listAPIKeys(ctx context.Context, cfg config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("apikey list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tenant := fs.String("tenant", "", "tenant name")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || strings.TrimSpace(*tenant) == "" {
		return usageError("usage: api apikey list --tenant NAME")
	}
	return withStore(ctx, cfg, func(st *store.Store) error {
		keys, err := st.ListAPIKeys(ctx, strings.TrimSpace(*tenant))
		if errors.Is(err, store.ErrNoSuchTenant) {
			return fmt.Errorf("no tenant named %q", strings.TrimSpace(*tenant))
		}
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tPREFIX\tCREATED\tREVOKED")
		for _, k := range keys {
			revoked := "-"
			if k.RevokedAt != nil {
				revoked = k.RevokedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", k.ID, k.Prefix, k.CreatedAt.UTC().Format(time.RFC3339), revoked)
		}
		return w.Flush()
	})
}

// revokeAPIKey runs `api apikey revoke ID`: the key stops working on every
// running server within 2 s. Revoking it again changes nothing.
func revokeAPIKey(ctx context.Context, cfg config, args []string, stdout io.Writer) error {
	if len(args) != 1 || strings.TrimSpace(args[0]) == "" {
		return usageError("usage: api apikey revoke ID")
	}
	return withStore(ctx, cfg, func(st *store.Store) error {
		at, err := st.RevokeAPIKey(ctx, args[0])
		if errors.Is(err, store.ErrNoSuchAPIKey) {
			return fmt.Errorf("no API key %q (api apikey list --tenant NAME shows the ids)", args[0])
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %s at %s\n", args[0], at.UTC().Format(time.RFC3339))
		return nil
	})
}

// withStore runs fn on a store with a small pool of its own.
func withStore(ctx context.Context, cfg config, fn func(*store.Store) error) error {
	pool, err := openPool(ctx, cfg.DatabaseURL, 2, cfg.Pooled(), false)
	if err != nil {
		return err
	}
	defer pool.Close()
	return fn(store.New(pool, store.Options{PerTransactionTimeouts: cfg.Pooled()}))
}

// errViolations is verify's exit 1: the lines printed say what is wrong.
var errViolations = errors.New("invariants broken")

// verify runs `api verify [--repair]`: every invariant of product.md §6 on
// the live database, one line each ("ok" or "FAIL" with the rows that break
// it); exit 1 when any is broken. --repair first rebuilds derived state and
// prints each change. The checks are plain SELECTs: they block no writer.
func verify(ctx context.Context, cfg config, args []string, stdout io.Writer) error {
	repair := len(args) == 1 && args[0] == "--repair"
	if len(args) == 1 && !repair {
		return usageError("usage: api verify [--repair]")
	}
	pool, err := openPool(ctx, cfg.DatabaseURL, 2, cfg.Pooled(), false)
	if err != nil {
		return err
	}
	defer pool.Close()
	h := cfg.horizons(time.Now())
	if repair {
		report := func(r store.Repaired) { fmt.Fprintln(stdout, "repaired", r) }
		st := store.New(pool, store.Options{PerTransactionTimeouts: cfg.Pooled()})
		if err := st.RepairBalances(ctx, report); err != nil {
			return err
		}
		if err := st.RepairDeliveries(ctx, h, report); err != nil {
			return err
		}
	}
	broken := false
	for _, inv := range store.Invariants {
		bad, err := store.CheckInvariant(ctx, pool, inv, h)
		if err != nil {
			return fmt.Errorf("%s: %w", inv.Name, err)
		}
		if len(bad) == 0 {
			fmt.Fprintln(stdout, "ok  ", inv.Name)
			continue
		}
		broken = true
		shown := make([]string, 0, 20)
		for _, b := range bad[:min(len(bad), 20)] {
			shown = append(shown, b.String())
		}
		more := ""
		if len(bad) > 20 {
			more = fmt.Sprintf("; and %d more", len(bad)-20)
		}
		fmt.Fprintf(stdout, "FAIL %s: %s%s\n", inv.Name, strings.Join(shown, "; "), more)
	}
	if broken {
		return errViolations
	}
	return nil
}
