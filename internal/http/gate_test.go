package http_test

import (
	"context"
	"testing"
	"time"
)

// gate holds the transaction of the request with an idempotency key open,
// after its writes and right before it stores its response, until opened:
// a long transaction of the tenant, at a known point.
type gate struct {
	h *harness
}

// holdAtGate installs the gate for the requests whose key is LIKE key.
func (h *harness) holdAtGate(t *testing.T, key string) gate {
	t.Helper()
	if _, err := h.pool.Exec(context.Background(), `
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
	return gate{h}
}

// waitHeld returns once a request is held at the gate.
func (g gate) waitHeld(t *testing.T) { t.Helper(); g.waitHeldN(t, 1) }

// waitHeldN returns once n requests are held at the gate.
func (g gate) waitHeldN(t *testing.T, n int) {
	t.Helper()
	for {
		var waiting int
		if err := g.h.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event = 'PgSleep'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting >= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// open lets the held request go on, and every later one.
func (g gate) open(t *testing.T) {
	t.Helper()
	if _, err := g.h.pool.Exec(context.Background(), `INSERT INTO gate VALUES (true)`); err != nil {
		t.Fatal(err)
	}
}
