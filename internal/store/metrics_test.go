package store_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/safeflow/safeflow/internal/store"
	"github.com/safeflow/safeflow/internal/testdb"
)

// A gauge read from the database that cannot be read is left out of the
// scrape; the scrape itself still succeeds.
func TestAnUnreadableGaugeIsLeftOut(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(store.NewServerCollector(pool), store.NewPoolCollector("api", pool))
	names := func() map[string]bool {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatalf("the scrape failed: %v", err)
		}
		out := map[string]bool{}
		for _, mf := range mfs {
			out[mf.GetName()] = true
		}
		return out
	}
	if got := names(); !got["safeflow_db_oldest_transaction_age_seconds"] || !got["safeflow_db_pool_max_connections"] {
		t.Fatalf("gauges = %v", got)
	}
	pool.Close() // the database can no longer be read
	if got := names(); got["safeflow_db_oldest_transaction_age_seconds"] || !got["safeflow_db_pool_max_connections"] {
		t.Errorf("with the database unreadable: %v; want the oldest-transaction gauge left out, the pool's still there", got)
	}
}
