package store

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// openTx is a transaction begun by hand, so that BEGIN travels in the same
// round trip as the statements that follow it (pgx's own BeginTx waits for
// BEGIN's reply alone). It satisfies pgx.Tx for the safe flow's steps; a
// Commit or Rollback that fails closes the connection, as pgx's does.
type openTx struct {
	conn   *pgx.Conn
	closed bool
}

// beginStatements open a transaction of the store: READ COMMITTED, with the
// timeouts set per transaction when the sessions do not carry them.
func (s *Store) beginStatements() []string {
	stmts := []string{"BEGIN ISOLATION LEVEL READ COMMITTED"}
	if s.opt.PerTransactionTimeouts {
		stmts = append(stmts, "SET LOCAL lock_timeout = '"+LockTimeout+"'", "SET LOCAL statement_timeout = '"+StatementTimeout+"'",
			"SET LOCAL idle_in_transaction_session_timeout = '"+IdleInTxTimeout+"'")
	}
	return stmts
}

// acquireTx takes a connection for a transaction begun by hand: its BEGIN
// (queueBegin) goes in the round trip of its first statements. release
// rolls back what is still open and returns the connection; calling it
// again does nothing (a lost COMMIT releases early, before looking).
func (s *Store) acquireTx(ctx context.Context) (tx *openTx, release func(), err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	tx = &openTx{conn: conn.Conn()}
	return tx, func() {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		conn.Release()
	}, nil
}

// queueBegin queues on b the statements that begin a transaction of the
// store (beginStatements).
func (s *Store) queueBegin(b *pgx.Batch) {
	for _, q := range s.beginStatements() {
		b.Queue(q)
	}
}

func (t *openTx) Begin(context.Context) (pgx.Tx, error) {
	return nil, errors.New("store: the safe flow does not nest transactions")
}

func (t *openTx) Commit(ctx context.Context) error {
	if t.closed {
		return pgx.ErrTxClosed
	}
	t.closed = true
	tag, err := t.conn.Exec(ctx, "COMMIT")
	if err != nil {
		if t.conn.PgConn().TxStatus() != 'I' {
			_ = t.conn.Close(ctx)
		}
		return err
	}
	if tag.String() == "ROLLBACK" {
		return pgx.ErrTxCommitRollback
	}
	return nil
}

// commitAfter sends b's statements and then the COMMIT, in one round trip.
// If a statement of b fails, the server skips what follows it until the
// end of the round trip, the COMMIT included: aborted is true, the
// transaction is still open (to roll back, or back to a savepoint) and err
// is that statement's. Otherwise the transaction is over and err is the
// COMMIT's, as Commit's would be: nil if it committed, an ERROR if it
// rolled back, and anything else (a reply lost with the connection) if it
// cannot tell. Whether the COMMIT was reached is read off the transaction
// status the server reports at the end of the round trip.
func (t *openTx) commitAfter(ctx context.Context, b *pgx.Batch) (aborted bool, err error) {
	if t.closed {
		return false, pgx.ErrTxClosed
	}
	b.Queue("COMMIT").Exec(func(tag pgconn.CommandTag) error {
		if tag.String() == "ROLLBACK" {
			return pgx.ErrTxCommitRollback
		}
		return nil
	})
	err = t.conn.SendBatch(ctx, b).Close()
	if err != nil && !t.conn.IsClosed() && t.conn.PgConn().TxStatus() == 'E' {
		return true, err
	}
	t.closed = true
	if err != nil && !t.conn.IsClosed() && t.conn.PgConn().TxStatus() != 'I' {
		_ = t.conn.Close(ctx)
	}
	return false, err
}

func (t *openTx) Rollback(ctx context.Context) error {
	if t.closed {
		return pgx.ErrTxClosed
	}
	t.closed = true
	if _, err := t.conn.Exec(ctx, "ROLLBACK"); err != nil {
		_ = t.conn.Close(ctx)
		return err
	}
	return nil
}

func (t *openTx) CopyFrom(ctx context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error) {
	return t.conn.CopyFrom(ctx, table, cols, src)
}

func (t *openTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return t.conn.SendBatch(ctx, b)
}

func (t *openTx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} } // not used

func (t *openTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	return t.conn.Prepare(ctx, name, sql)
}

func (t *openTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return t.conn.Exec(ctx, sql, args...)
}

func (t *openTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return t.conn.Query(ctx, sql, args...)
}

func (t *openTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return t.conn.QueryRow(ctx, sql, args...)
}

func (t *openTx) Conn() *pgx.Conn { return t.conn }
