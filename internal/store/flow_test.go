package store_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/store"
	"github.com/safeflow/safeflow/internal/testdb"
)

func accountID(a domain.Account) string   { return a.ID }
func movementID(m domain.Movement) string { return m.ID }

// When the database refuses a write that the domain allowed (the CHECK on
// the books is the last line of defence), the writes roll back to the
// savepoint and the refusal is stored under the key.
func TestRefusalOfAWriteIsStoredAndNothingIsWritten(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	st := store.New(pool, store.Options{})
	secret, _ := st.CreateAPIKey(ctx, "acme")
	tenant, err := st.Authenticate(ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.CreateAccount(ctx, testdb.Request(tenant, "a", "a", accountID), domain.NewAccount{Currency: "USD"})
	if err != nil {
		t.Fatal(err)
	}
	var a domain.Account
	if err := json.Unmarshal(res.Body, &a); err != nil {
		t.Fatal(err)
	}

	// Make the database refuse the movement the way the books' CHECK would.
	if _, err := pool.Exec(ctx, `
		CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
			RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation', CONSTRAINT = 'accounts_books_nonnegative';
		END $$;
		CREATE TRIGGER refuse BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION refuse();`); err != nil {
		t.Fatal(err)
	}
	req := testdb.Request(tenant, "dep", "dep", movementID)
	in := domain.NewMovement{Kind: domain.KindDeposit, AccountID: a.ID, Amount: 10}
	first, err := st.Move(ctx, req, in)
	if err != nil {
		t.Fatal(err)
	}
	if first.Status != http.StatusUnprocessableEntity || string(first.Body) != domain.CodeInsufficientFunds || first.Replayed {
		t.Fatalf("first answer = %d %s (replayed %v), want a fresh 422 insufficient_funds", first.Status, first.Body, first.Replayed)
	}
	again, err := st.Move(ctx, req, in)
	if err != nil || !again.Replayed || again.Status != first.Status {
		t.Fatalf("second answer = %+v, %v; want the stored refusal replayed", again, err)
	}
	var movements, lines, events int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM movements), (SELECT count(*) FROM ledger_entries),
		(SELECT count(*) FROM events)`).Scan(&movements, &lines, &events); err != nil {
		t.Fatal(err)
	}
	if movements != 0 || lines != 0 || events != 1 {
		t.Errorf("after the refused write: %d movements, %d ledger lines, %d events; want 0, 0, 1 (account.created)", movements, lines, events)
	}
	if _, err := pool.Exec(ctx, `DROP TRIGGER refuse ON accounts`); err != nil {
		t.Fatal(err)
	}
	testdb.CheckInvariants(t, pool)
}
