package http_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/safeflow/safeflow/internal/promtest"
	"github.com/safeflow/safeflow/internal/testdb"
)

// injectFault makes the next n ledger line inserts fail with SQLSTATE code,
// raised by PostgreSQL inside the request's transaction (after the key's
// claim and the account's row lock, among the writes). The count is a
// sequence, so the failed transactions' rollbacks do not undo it.
func (h *harness) injectFault(t *testing.T, code string, n int) {
	t.Helper()
	if _, err := h.pool.Exec(context.Background(), `
		DROP TRIGGER IF EXISTS inject_fault ON ledger_entries;
		DROP SEQUENCE IF EXISTS fault_calls;
		CREATE SEQUENCE fault_calls;
		CREATE OR REPLACE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
		    IF nextval('fault_calls') <= `+strconv.Itoa(n)+` THEN
		        RAISE EXCEPTION 'injected by the test' USING ERRCODE = '`+code+`';
		    END IF;
		    RETURN NEW;
		END $$;
		CREATE TRIGGER inject_fault BEFORE INSERT ON ledger_entries FOR EACH ROW EXECUTE FUNCTION inject_fault();`); err != nil {
		t.Fatal(err)
	}
}

// Errors PostgreSQL raises in a safe flow that nobody provokes by accident:
// each ends in an answer a client can act on, never a 500, and a request is
// applied once or not at all.
func TestTransientErrorsAreRetriedOrAnswered503(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a := h.mustAccount(t, "USD")
	deposits := "/v1/accounts/" + a.ID + "/deposits"
	balance := func() int64 { av, _, _ := h.balances(t, a.ID); return av }

	for i, tc := range []struct{ code, reason string }{
		{"40001", "serialization_failure"},
		{"40P01", "deadlock"},
	} {
		t.Run(tc.reason+" is retried", func(t *testing.T) {
			h.injectFault(t, tc.code, 2)
			before := h.retries(t, tc.reason)
			rolledBack := promtest.Value(t, h.storeMetrics, "safeflow_tx_rollbacks_total", "reason", tc.reason)
			h.post(t, deposits, "retried-"+tc.code, `{"amount":1}`).want(t, http.StatusCreated)
			if n := h.retries(t, tc.reason) - before; n != 2 {
				t.Errorf("retries{reason=%s} grew by %d, want 2", tc.reason, n)
			}
			if n := promtest.Value(t, h.storeMetrics, "safeflow_tx_rollbacks_total", "reason", tc.reason) - rolledBack; n != 2 {
				t.Errorf("rollbacks{reason=%s} grew by %v, want 2", tc.reason, n)
			}
			if got := balance(); got != int64(i+1) {
				t.Errorf("balance %d, want %d: applied once", got, i+1)
			}
		})
	}

	t.Run("retries exhausted: 503, nothing applied, the key free", func(t *testing.T) {
		h.injectFault(t, "40001", 1000)
		before := h.retries(t, "serialization_failure")
		r := h.post(t, deposits, "exhausted", `{"amount":100}`)
		p := r.wantProblem(t, http.StatusServiceUnavailable, "service_unavailable")
		if r.header.Get("Retry-After") == "" || !strings.Contains(p.Detail, "nothing was applied") {
			t.Errorf("Retry-After %q, detail %q", r.header.Get("Retry-After"), p.Detail)
		}
		if n := h.retries(t, "serialization_failure") - before; n != 4 {
			t.Errorf("retried %d times, want 4 (5 attempts)", n)
		}
		if got := balance(); got != 2 {
			t.Errorf("balance %d after a refused deposit, want 2", got)
		}
		// The failure outlives its transaction's rollback: the key has no
		// record, but its failed attempt is on file.
		var gone struct {
			Attempts []struct {
				Method, Route, Cause, Code string
				Attempts, Status           int
				RequestID                  string `json:"request_id"`
			}
		}
		h.get(t, "/v1/idempotency-keys/exhausted").want(t, http.StatusNotFound).decode(t, &gone)
		if len(gone.Attempts) != 1 || gone.Attempts[0].Attempts != 5 || gone.Attempts[0].Status != 503 ||
			gone.Attempts[0].Code != "service_unavailable" || !strings.HasPrefix(gone.Attempts[0].Cause, "SQLSTATE 40001") ||
			gone.Attempts[0].Route != "/v1/accounts/{account_id}/deposits" || gone.Attempts[0].Method != "POST" ||
			!strings.HasSuffix(p.Instance, gone.Attempts[0].RequestID) {
			t.Errorf("failed attempts of the key = %+v, want the one 503 after 5 tries of 40001 (instance %s)", gone.Attempts, p.Instance)
		}
		h.injectFault(t, "40001", 0)
		h.post(t, deposits, "exhausted", `{"amount":100}`).want(t, http.StatusCreated)
		var k struct {
			Status   string
			Attempts []struct{ Status int }
		}
		h.get(t, "/v1/idempotency-keys/exhausted").want(t, http.StatusOK).decode(t, &k)
		if k.Status != "completed" || len(k.Attempts) != 1 || k.Attempts[0].Status != 503 {
			t.Errorf("the completed key = %+v, want its earlier failure listed", k)
		}
		if got := balance(); got != 102 {
			t.Errorf("balance %d after the retry, want 102", got)
		}
	})
}

// A statement that runs past statement_timeout (57014, here a genuine one:
// a store whose sessions allow 300 ms, and a write that takes a second) is
// a 503 with Retry-After; nothing was applied and the key may be retried.
func TestStatementTimeoutIs503(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	cfg := pool.Config()
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = "300ms"
	short, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(short.Close)
	h := startHarness(t, pool, short)
	a := h.mustAccount(t, "USD")
	if _, err := h.pool.Exec(context.Background(), `
		CREATE SEQUENCE slow_calls;
		CREATE FUNCTION slow_write() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
		    IF nextval('slow_calls') = 1 THEN PERFORM pg_sleep(1); END IF;
		    RETURN NEW;
		END $$;
		CREATE TRIGGER slow_write BEFORE INSERT ON ledger_entries FOR EACH ROW EXECUTE FUNCTION slow_write();`); err != nil {
		t.Fatal(err)
	}
	deposits := "/v1/accounts/" + a.ID + "/deposits"
	r := h.post(t, deposits, "slow", `{"amount":7}`)
	r.wantProblem(t, http.StatusServiceUnavailable, "service_unavailable")
	if r.header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	if av, _, _ := h.balances(t, a.ID); av != 0 {
		t.Errorf("balance %d after a timed-out deposit, want 0", av)
	}
	h.post(t, deposits, "slow", `{"amount":7}`).want(t, http.StatusCreated)
	if av, _, _ := h.balances(t, a.ID); av != 7 {
		t.Errorf("balance %d after the retry, want 7", av)
	}
}
