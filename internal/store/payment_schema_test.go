package store_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/testdb"
)

// The database enforces the state machine too: for every pair of statuses,
// an UPDATE of a payment's status succeeds exactly when domain.Transitions
// has that change, and nothing else about a payment may change.
func TestPaymentSchemaEnforcesTheStateMachine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	if _, err := pool.Exec(ctx, `
		INSERT INTO tenants (id, name) VALUES ('ten_1', 'acme');
		INSERT INTO accounts (id, tenant_id, kind, currency, available, held, incoming, created_at)
		VALUES ('acct_a', 'ten_1', 'customer', 'USD', 0, 0, 0, now()), ('acct_b', 'ten_1', 'customer', 'USD', 0, 0, 0, now())`); err != nil {
		t.Fatal(err)
	}
	allowed := map[[2]string]bool{}
	for _, tr := range domain.Transitions {
		allowed[[2]string{tr.From, tr.To}] = true
	}
	insert := `INSERT INTO payments (id, tenant_id, status, amount, currency, payer_account_id, payee_account_id, version, created_at, updated_at)
		VALUES ($1, 'ten_1', $2, 10, 'USD', 'acct_a', 'acct_b', 1, now(), now())`
	n := 0
	for _, from := range domain.PaymentStatuses {
		for _, to := range domain.PaymentStatuses {
			n++
			id := "pay_" + strconv.Itoa(n)
			if _, err := pool.Exec(ctx, insert, id, from); err != nil {
				t.Fatal(err)
			}
			_, err := pool.Exec(ctx, `UPDATE payments SET status = $2, version = version + 1 WHERE id = $1`, id, to)
			if allowed[[2]string{from, to}] != (err == nil) {
				t.Errorf("%s → %s: err = %v, allowed by domain.Transitions = %v", from, to, err, allowed[[2]string{from, to}])
			}
			if err != nil && !isCheck(err, "payments_transition_allowed") {
				t.Errorf("%s → %s: err = %v, want check_violation payments_transition_allowed", from, to, err)
			}
		}
	}
	if _, err := pool.Exec(ctx, insert, "pay_x", "lost"); !isCheck(err, "payments_status_known") {
		t.Errorf("unknown status: err = %v, want check_violation payments_status_known", err)
	}
	if _, err := pool.Exec(ctx, insert, "pay_y", "pending"); err != nil {
		t.Fatal(err)
	}
	for _, set := range []string{"amount = 11, status = 'confirmed', version = 2", "payee_account_id = 'acct_a', status = 'confirmed', version = 2",
		"status = 'confirmed', version = 5", "status = 'confirmed'"} {
		if _, err := pool.Exec(ctx, `UPDATE payments SET `+set+` WHERE id = 'pay_y'`); !isCheck(err, "payments_transition_allowed") {
			t.Errorf("SET %s: err = %v, want check_violation payments_transition_allowed", set, err)
		}
	}
}

func isCheck(err error, constraint string) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == "23514" && pg.ConstraintName == constraint
}
