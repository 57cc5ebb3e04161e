package store

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"
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
//
// Behind a transaction pooler (PgBouncer with pool_mode=transaction,
// pooled) a session is not the client's: startup parameters are refused
// and prepared statements are lost between transactions. Then the
// timeouts are left out of the startup (each transaction sets them: see
// Options.PerTransactionTimeouts) and statements run as unnamed ones whose
// descriptions the connection caches (QueryExecModeCacheDescribe), which
// works through the pooler for every statement the service runs, maps to
// jsonb included.
func PoolConfig(url string, maxConns int32, pooled bool) (*pgxpool.Config, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(url, "pool_max_conns") {
		pc.MaxConns = maxConns
	}
	rp := pc.ConnConfig.RuntimeParams
	rp["application_name"] = "safeflow"
	if pooled {
		pc.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
		return pc, nil
	}
	rp["lock_timeout"] = LockTimeout
	rp["statement_timeout"] = StatementTimeout
	rp["idle_in_transaction_session_timeout"] = IdleInTxTimeout
	return pc, nil
}

// perTransactionBegin starts a transaction with the session timeouts set
// for it alone, in the same round trip (simple protocol: one message).
const perTransactionBegin = `BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = '` + LockTimeout +
	`'; SET LOCAL statement_timeout = '` + StatementTimeout + `'; SET LOCAL idle_in_transaction_session_timeout = '` + IdleInTxTimeout + `'`

// txOptions begin every transaction of the store: READ COMMITTED, with the
// timeouts set per transaction when the sessions do not carry them.
func (s *Store) txOptions() pgx.TxOptions {
	if s.opt.PerTransactionTimeouts {
		return pgx.TxOptions{BeginQuery: perTransactionBegin}
	}
	return pgx.TxOptions{IsoLevel: pgx.ReadCommitted}
}

// begin starts a transaction of the store.
func (s *Store) begin(ctx context.Context) (pgx.Tx, error) { return s.pool.BeginTx(ctx, s.txOptions()) }

// inTx runs fn in a transaction of the store, committed if fn returns nil.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, s.pool, s.txOptions(), fn)
}
