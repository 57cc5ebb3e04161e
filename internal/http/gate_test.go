package http_test

import (
	"testing"

	"github.com/safeflow/safeflow/internal/testdb"
)

// holdAtGate holds the transactions of the harness's requests whose key is
// LIKE key open before they store their response (testdb.Gate).
func (h *harness) holdAtGate(t *testing.T, key string) testdb.Gate {
	t.Helper()
	return testdb.HoldAtGate(t, h.pool, key)
}
