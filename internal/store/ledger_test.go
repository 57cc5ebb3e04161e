package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/safeflow/safeflow/internal/testdb"
)

// The schema is the final line of defence: it refuses journals that do not
// balance and any change to ledger lines, whatever the code does.
func TestLedgerSchemaRefusesBadJournals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	if _, err := pool.Exec(ctx, `INSERT INTO tenants (id, name) VALUES ('ten_1', 'acme')`); err != nil {
		t.Fatal(err)
	}
	insert := `INSERT INTO ledger_entries (id, tenant_id, journal_id, account_id, book, amount, currency, created_at)
		VALUES ('le_1', 'ten_1', 'jnl_1', 'acct_a', 'available', $1, 'USD', now()),
		       ('le_2', 'ten_1', 'jnl_1', 'acct_b', 'available', -5, 'USD', now())`
	_, err := pool.Exec(ctx, insert, 4)
	var pg *pgconn.PgError
	if !errors.As(err, &pg) || pg.Code != "23514" || pg.ConstraintName != "ledger_journal_balanced" {
		t.Fatalf("unbalanced journal: err = %v, want check_violation ledger_journal_balanced", err)
	}
	if _, err := pool.Exec(ctx, insert, 5); err != nil {
		t.Fatalf("balanced journal: %v", err)
	}
	for _, sql := range []string{`UPDATE ledger_entries SET amount = 6 WHERE id = 'le_1'`, `DELETE FROM ledger_entries WHERE id = 'le_2'`} {
		if _, err := pool.Exec(ctx, sql); err == nil {
			t.Errorf("%s: succeeded on an append-only ledger", sql)
		}
	}
	if _, err := pool.Exec(ctx, `DELETE FROM ledger_entries WHERE journal_id = 'jnl_1'`); err == nil {
		t.Error("ledger lines could be deleted")
	}
}
