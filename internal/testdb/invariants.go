package testdb

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/safeflow/safeflow/internal/store"
)

// Purged names what a scenario purged by design, so that the invariants
// that need it are skipped.
type Purged = store.Purged

// What a scenario can purge.
const (
	KeysPurged   = store.KeysPurged   // expired idempotency keys: resources outlive them
	OutboxPurged = store.OutboxPurged // events and deliveries past retention
)

// CheckInvariants fails t for every row that breaks an invariant of
// product.md §6 (store.Invariants: the ones api verify runs). Scenarios that
// purged rows by design name what they purged, which skips only the checks
// that need those rows.
func CheckInvariants(t testing.TB, pool *pgxpool.Pool, purged ...Purged) {
	t.Helper()
	for _, inv := range store.Invariants {
		if inv.Needs != "" && slices.Contains(purged, inv.Needs) {
			continue
		}
		bad, err := store.CheckInvariant(context.Background(), pool, inv, store.Horizons{})
		if err != nil {
			t.Errorf("invariant %q: query: %v", inv.Name, err)
			continue
		}
		for _, b := range bad {
			t.Errorf("invariant %q broken: %s", inv.Name, b)
		}
	}
}
