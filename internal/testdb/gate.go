package testdb

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Gate holds the transactions of the requests whose idempotency key is
// LIKE a pattern open, after their writes and right before they store their
// response, until opened: long transactions of a tenant, at a known point.
type Gate struct{ pool *pgxpool.Pool }

// HoldAtGate installs the gate on pool's database for the keys LIKE key.
func HoldAtGate(t testing.TB, pool *pgxpool.Pool, key string) Gate {
	t.Helper()
	if _, err := pool.Exec(context.Background(), `
		CREATE TABLE gate (opened boolean);
		CREATE FUNCTION hold_at_gate() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
		    WHILE NOT EXISTS (SELECT 1 FROM gate) LOOP PERFORM pg_sleep(0.01); END LOOP;
		    RETURN NEW;
		END $$;
		CREATE TRIGGER hold_at_gate BEFORE UPDATE ON idempotency_keys
		    FOR EACH ROW WHEN (NEW.key LIKE '`+key+`') EXECUTE FUNCTION hold_at_gate();`); err != nil {
		t.Fatal(err)
	}
	return Gate{pool}
}

// WaitHeld returns once n requests are held at the gate.
func (g Gate) WaitHeld(t testing.TB, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var waiting int
		if err := g.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event = 'PgSleep'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testdb: %d requests held at the gate after 10 s, want %d", waiting, n)
		}
	}
}

// Open lets the held requests go on, and every later one.
func (g Gate) Open(t testing.TB) {
	t.Helper()
	if _, err := g.pool.Exec(context.Background(), `INSERT INTO gate VALUES (true)`); err != nil {
		t.Fatal(err)
	}
}
