package store

import (
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Timeouts every connection carries, so no safe-flow transaction waits on a
// lock or runs a statement without bound.
const (
	// LockTimeout is the longest a request waits for a row lock or for another
	// request holding the same idempotency key.
	LockTimeout      = "1s"
	StatementTimeout = "5s"
	IdleInTxTimeout  = "15s"
)

// PoolConfig parses a libpq URL into a pool configuration with safeflow's
// session settings. Without pool_max_conns in the URL the pool holds up to
// maxConns connections.
func PoolConfig(url string, maxConns int32) (*pgxpool.Config, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(url, "pool_max_conns") {
		pc.MaxConns = maxConns
	}
	rp := pc.ConnConfig.RuntimeParams
	rp["application_name"] = "safeflow"
	rp["lock_timeout"] = LockTimeout
	rp["statement_timeout"] = StatementTimeout
	rp["idle_in_transaction_session_timeout"] = IdleInTxTimeout
	return pc, nil
}
