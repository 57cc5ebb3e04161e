package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

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

// The writes and the COMMIT travel in one round trip, so a guarded write
// that matches no row must stop the COMMIT on the server: here a trigger
// makes the books' UPDATE skip its row, as a lost lock would. The request
// fails as an internal error, nothing of it is committed (not even its
// key), and once the fault is gone the same key applies it once.
func TestAGuardedWriteThatMatchesNothingCommitsNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, st, tenant, a := oneAccount(t)
	if _, err := pool.Exec(ctx, `
		CREATE FUNCTION skip_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
		CREATE TRIGGER skip_row BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION skip_row();`); err != nil {
		t.Fatal(err)
	}
	req := testdb.Request(tenant, "dep", "dep", movementID)
	in := domain.NewMovement{Kind: domain.KindDeposit, AccountID: a.ID, Amount: 10}
	res, err := st.Move(ctx, req, in)
	var de *domain.Error
	if err == nil || errors.As(err, &de) || !strings.Contains(err.Error(), "SF001") {
		t.Fatalf("Move with a guard that fires = %d %s, %v; want the guard's internal error (SQLSTATE SF001)", res.Status, res.Body, err)
	}
	var movements, lines, events, keys int
	count := func() {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM movements), (SELECT count(*) FROM ledger_entries),
			(SELECT count(*) FROM events WHERE type = 'deposit.created'), (SELECT count(*) FROM idempotency_keys WHERE key = 'dep')`).
			Scan(&movements, &lines, &events, &keys); err != nil {
			t.Fatal(err)
		}
	}
	if count(); movements+lines+events+keys != 0 {
		t.Fatalf("after the guard fired: %d movements, %d lines, %d events, %d keys; want nothing committed", movements, lines, events, keys)
	}
	if _, err := pool.Exec(ctx, `DROP TRIGGER skip_row ON accounts`); err != nil {
		t.Fatal(err)
	}
	if res, err = st.Move(ctx, req, in); err != nil || res.Status != http.StatusCreated || res.Replayed {
		t.Fatalf("the retry = %d %s (replayed %v), %v; want a fresh 201", res.Status, res.Body, res.Replayed, err)
	}
	if count(); movements != 1 || lines != 2 || events != 1 || keys != 1 {
		t.Errorf("after the retry: %d movements, %d lines, %d events, %d keys; want 1, 2, 1, 1", movements, lines, events, keys)
	}
	testdb.CheckInvariants(t, pool)
}

// The locking reads travel with the claim, guarded by it: a request whose
// key is finished replays without waiting for the rows the change would
// lock. Here the account stays locked by another transaction while the
// deposit is sent again: the replay must come back well within
// lock_timeout (1 s), which a wait on the row would exceed.
func TestAReplayWaitsForNoBusinessRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, st, tenant, a := oneAccount(t)
	req := testdb.Request(tenant, "dep", "dep", movementID)
	in := domain.NewMovement{Kind: domain.KindDeposit, AccountID: a.ID, Amount: 10}
	first, err := st.Move(ctx, req, in)
	if err != nil {
		t.Fatal(err)
	}
	holder, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Rollback(ctx) }()
	if _, err := holder.Exec(ctx, `SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE`, a.ID); err != nil {
		t.Fatal(err)
	}
	quick, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancel()
	again, err := st.Move(quick, req, in)
	if err != nil || !again.Replayed || string(again.Body) != string(first.Body) {
		t.Fatalf("replay while the account is locked = %d %s (replayed %v), %v; want the stored answer at once", again.Status, again.Body, again.Replayed, err)
	}
	// A new deposit does wait for the row: the guard is what spared the replay.
	if _, err := st.Move(quick, testdb.Request(tenant, "dep-2", "dep-2", movementID), in); err == nil {
		t.Fatal("a new deposit on the locked account was applied within 700 ms; want it to wait for the lock")
	}
	_ = holder.Rollback(ctx)
	testdb.CheckInvariants(t, pool)
}

// The rows a request writes carry no foreign key to tenants (migration
// 00011: it made every transaction of a tenant lock the tenant's row). The
// invariant that replaces it finds a row of a tenant that does not exist,
// and a movement on another tenant's account.
func TestTheTenantInvariantFindsWhatTheForeignKeysCaught(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, st, tenant, a := oneAccount(t)
	if _, err := st.Move(ctx, testdb.Request(tenant, "dep", "dep", movementID), domain.NewMovement{Kind: domain.KindDeposit, AccountID: a.ID, Amount: 5}); err != nil {
		t.Fatal(err)
	}
	var inv store.Invariant
	for _, i := range store.Invariants {
		if strings.Contains(i.Name, "names an existing tenant") {
			inv = i
		}
	}
	check := func() []store.Violation {
		t.Helper()
		v, err := store.CheckInvariant(ctx, pool, inv, store.Horizons{})
		if err != nil {
			t.Fatalf("%s: %v", inv.Name, err)
		}
		return v
	}
	if v := check(); len(v) != 0 {
		t.Fatalf("on a sound database: %v", v)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO tenants (id, name, created_at) VALUES ('ten_other', 'other', now());
		INSERT INTO idempotency_keys (tenant_id, key, fingerprint, expires_at) VALUES ('ten_ghost', 'k', '', now() + interval '1h');
		UPDATE movements SET tenant_id = 'ten_other';`); err != nil {
		t.Fatal(err)
	}
	v := check()
	if len(v) != 2 || !strings.Contains(fmt.Sprint(v), "idempotency key k: ten_ghost") || !strings.Contains(fmt.Sprint(v), "movement dep_") {
		t.Errorf("violations %v, want the ghost tenant's key and the movement on another tenant's account", v)
	}
}
