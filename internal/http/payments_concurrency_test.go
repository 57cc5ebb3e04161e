package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// 40 concurrent copies of one creation under one key: one payment, one hold,
// forty identical answers, exactly one of them fresh.
func TestConcurrentCopiesOfOnePayment(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b := h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 1000)

	const n = 40
	res := make([]response, n)
	parallel(n, func(i int) {
		res[i] = send(t, h.request(t, http.MethodPost, "/v1/payments", paymentBody(a.ID, b.ID, 125, "USD"), "Idempotency-Key", "one-payment"))
	})
	wantOneEffect(t, res)
	if got := h.count(t, "payments"); got != 1 {
		t.Errorf("payments = %d, want 1", got)
	}
	h.wantBooks(t, "40 copies", map[string]books{a.ID: {875, 125, 0}})
}

// 60 concurrent creations, each with its own key, racing for funds for 10:
// exactly 10 are pending and 50 are refused with insufficient_funds.
func TestPaymentsRaceForFunds(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b := h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 10*70)

	const n = 60
	res := make([]response, n)
	parallel(n, func(i int) { res[i] = h.createPayment(t, a.ID, b.ID, 70) })
	counts := map[int]int{}
	for _, r := range res {
		counts[r.status]++
		if r.status == http.StatusUnprocessableEntity {
			r.wantProblem(t, http.StatusUnprocessableEntity, "insufficient_funds")
		}
	}
	if counts[http.StatusCreated] != 10 || counts[http.StatusUnprocessableEntity] != 50 {
		t.Errorf("answers by status = %v, want 10 × 201 and 50 × 422", counts)
	}
	var pending int
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM payments WHERE status = 'pending'`).Scan(&pending); err != nil {
		t.Fatal(err)
	}
	if pending != 10 {
		t.Errorf("%d pending payments, want 10", pending)
	}
	h.wantBooks(t, "the race", map[string]books{a.ID: {0, 700, 0}})
}

// 20 concurrent confirms and cancels of one pending payment, each with its
// own key: exactly one wins; every other one is told the status it found.
func TestConfirmAndCancelRace(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b := h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 500)
	p := h.mustPayment(t, a.ID, b.ID, 500)

	const n = 20
	res := make([]response, n)
	parallel(n, func(i int) {
		action := "confirm"
		if i%2 == 1 {
			action = "cancel"
		}
		res[i] = h.transition(t, p.ID, action, newKey())
	})
	var winner payment
	wins := 0
	for _, r := range res {
		switch r.status {
		case http.StatusOK:
			wins++
			r.decode(t, &winner)
		case http.StatusConflict:
			r.wantProblem(t, http.StatusConflict, "invalid_transition")
		default:
			t.Errorf("unexpected answer %d %s", r.status, r.body)
		}
	}
	if wins != 1 {
		t.Fatalf("%d transitions won, want exactly 1", wins)
	}
	for _, r := range res {
		if r.status != http.StatusConflict {
			continue
		}
		var body struct {
			CurrentStatus string `json:"current_status"`
		}
		r.decode(t, &body)
		if body.CurrentStatus != winner.Status {
			t.Errorf("a loser saw %q, want the winner's %q", body.CurrentStatus, winner.Status)
		}
	}
	want := map[string]books{a.ID: {500, 0, 0}, b.ID: {0, 0, 0}}
	if winner.Status == "confirmed" {
		want = map[string]books{a.ID: {0, 0, 0}, b.ID: {0, 0, 500}}
	}
	h.wantBooks(t, "the race ("+winner.Status+")", want)
	if got := h.count(t, "payment_transitions"); got != 2 {
		t.Errorf("%d transitions recorded, want 2 (create and the winner)", got)
	}
}

// 200 payments both ways between two accounts at once, each created,
// confirmed and settled: both accounts are locked by every step, in
// ascending id order, so no deadlock happens and none reaches a client;
// money is conserved.
func TestPaymentsBothWaysDoNotDeadlock(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b := h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 5000)
	h.mustDeposit(t, b.ID, 5000)

	const n = 200
	failures := make([]string, n)
	parallel(n, func(i int) {
		payer, payee := a.ID, b.ID
		if i%2 == 1 {
			payer, payee = b.ID, a.ID
		}
		r := h.createPayment(t, payer, payee, int64(1+i%7))
		if r.status != http.StatusCreated {
			failures[i] = "create: " + itoa(int64(r.status)) + " " + string(r.body)
			return
		}
		var p payment
		if !r.into(t, &p) {
			return
		}
		for _, action := range []string{"confirm", "settle"} {
			if r := h.transition(t, p.ID, action, newKey()); r.status != http.StatusOK {
				failures[i] = action + ": " + itoa(int64(r.status)) + " " + string(r.body)
				return
			}
		}
	})
	if f := strings.Join(nonEmpty(failures), "\n"); f != "" {
		t.Errorf("clients saw failures:\n%s", f)
	}
	if d := h.retries(t, "deadlock"); d != 0 {
		t.Errorf("%d deadlocks were detected (and retried); the lock order should prevent all", d)
	}
	ab, bb := h.books(t, a.ID), h.books(t, b.ID)
	if total := ab[0] + ab[1] + ab[2] + bb[0] + bb[1] + bb[2]; total != 10_000 || ab[1]+ab[2]+bb[1]+bb[2] != 0 {
		t.Errorf("books a %v b %v: want 10000 in all, nothing held or incoming", ab, bb)
	}
}

func nonEmpty(xs []string) []string {
	var out []string
	for _, x := range xs {
		if x != "" {
			out = append(out, x)
		}
	}
	return out
}

// decodeBatch decodes a batch answer: each item's status, problem code (for
// a refused item) and payment (for a created one). It marks the test failed
// on a malformed answer without stopping it, so goroutines may call it.
func decodeBatch(t *testing.T, r response) (statuses []int, codes []string, payments []payment) {
	t.Helper()
	var raw struct {
		Data []struct {
			Index  int             `json:"index"`
			Status int             `json:"status"`
			Body   json.RawMessage `json:"body"`
		} `json:"data"`
	}
	r.into(t, &raw)
	for i, it := range raw.Data {
		if it.Index != i {
			t.Errorf("result %d has index %d", i, it.Index)
		}
		var p payment
		var pr problem
		target := any(&p)
		if it.Status != http.StatusCreated {
			target = &pr
		}
		if err := json.Unmarshal(it.Body, target); err != nil {
			t.Errorf("item %d: %v", i, err)
		}
		statuses = append(statuses, it.Status)
		codes = append(codes, pr.Code)
		payments = append(payments, p)
	}
	return statuses, codes, payments
}

// A batch with failing items: each refused item is rolled back to its
// savepoint and reported; the others commit, each deciding on the books the
// items before it left. The whole batch replays under its key.
func TestPaymentBatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b, eur := h.mustAccount(t, "USD"), h.mustAccount(t, "USD"), h.mustAccount(t, "EUR")
	h.mustDeposit(t, a.ID, 500)

	items := []string{
		paymentBody(a.ID, b.ID, 200, "USD"),
		paymentBody(a.ID, a.ID, 10, "USD"),
		paymentBody(a.ID, eur.ID, 10, "USD"),
		paymentBody(a.ID, b.ID, 301, "USD"), // 300 left after the first item
		paymentBody("acct_06h00000000000000000000000", b.ID, 10, "USD"),
		paymentBody(a.ID, b.ID, 300, "USD"),
		paymentBody(a.ID, b.ID, 1, "USD"), // nothing left
	}
	body := `{"items":[` + strings.Join(items, ",") + `]}`
	res := h.post(t, "/v1/payments/batch", "batch-1", body).want(t, http.StatusOK)
	if res.header.Get("Idempotent-Replayed") != "false" || res.header.Get("Location") != "" {
		t.Errorf("batch headers: %v", res.header)
	}
	statuses, codes, ps := decodeBatch(t, res)
	wantStatuses := []int{201, 422, 422, 422, 404, 201, 422}
	wantCodes := []string{"", "same_account", "currency_mismatch", "insufficient_funds", "not_found", "", "insufficient_funds"}
	for i := range wantStatuses {
		if i >= len(statuses) || statuses[i] != wantStatuses[i] || codes[i] != wantCodes[i] {
			t.Fatalf("items = %v %v, want %v %v", statuses, codes, wantStatuses, wantCodes)
		}
	}
	if ps[0].Status != "pending" || ps[0].Amount != 200 || ps[5].Amount != 300 || ps[0].ID == ps[5].ID {
		t.Errorf("created items: %+v, %+v", ps[0], ps[5])
	}
	h.get(t, "/v1/payments/"+ps[5].ID).want(t, http.StatusOK)
	h.wantBooks(t, "the batch", map[string]books{a.ID: {0, 500, 0}, b.ID: {0, 0, 0}})
	if got := h.count(t, "payments"); got != 2 {
		t.Errorf("%d payments, want 2", got)
	}

	again := h.post(t, "/v1/payments/batch", "batch-1", body).want(t, http.StatusOK)
	if !bytes.Equal(again.body, res.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("batch replay differs or is not marked replayed")
	}
	h.post(t, "/v1/payments/batch", "batch-1", `{"items":[`+items[0]+`]}`).wantProblem(t, http.StatusUnprocessableEntity, "idempotency_key_reused")
	if got := h.count(t, "payments"); got != 2 {
		t.Errorf("%d payments after the replay, want 2", got)
	}
}

// Malformed batches are refused whole, naming the item; nothing is written.
func TestPaymentBatchBadInput(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b := h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 500)
	good := paymentBody(a.ID, b.ID, 1, "USD")

	tests := []struct{ name, body, field string }{
		{"no items", `{}`, "items"},
		{"empty items", `{"items":[]}`, "items"},
		{"items not an array", `{"items":{}}`, "items"},
		{"too many items", `{"items":[` + strings.TrimSuffix(strings.Repeat(good+",", 1001), ",") + `]}`, "items"},
		{"item with a bad amount", `{"items":[` + good + `,` + paymentBody(a.ID, b.ID, -1, "USD") + `]}`, "items[1].amount"},
		{"item with an unknown field", `{"items":[{"payer_account_id":"x","payee_account_id":"y","amount":1,"currency":"USD","tip":1}]}`, "items[0].tip"},
		{"item of the wrong type", `{"items":[` + good + `,7]}`, "items[1]"},
		{"item with a wrongly typed field", `{"items":[{"payer_account_id":"x","payee_account_id":"y","amount":"1","currency":"USD"}]}`, "items[0].amount"},
		{"unknown top-level field", `{"items":[` + good + `],"atomic":true}`, "atomic"},
	}
	for _, tc := range tests {
		p := h.post(t, "/v1/payments/batch", "bad-"+tc.name, tc.body).wantProblem(t, http.StatusBadRequest, "invalid_request")
		found := false
		for _, e := range p.Errors {
			found = found || e.Field == tc.field
		}
		if !found {
			t.Errorf("%s: errors %+v, want one naming %s", tc.name, p.Errors, tc.field)
		}
	}
	if got := h.count(t, "payments") + h.count(t, "idempotency_keys"); got != 3 { // the set-up's keys only
		t.Errorf("bad batches left %d payments and keys, want only the set-up's 3 keys", got)
	}
	// 1000 items is the limit, and fine.
	res := h.post(t, "/v1/payments/batch", newKey(), `{"items":[`+strings.TrimSuffix(strings.Repeat(good+",", 1000), ",")+`]}`).want(t, http.StatusOK)
	statuses, _, _ := decodeBatch(t, res)
	created := 0
	for _, s := range statuses {
		if s == http.StatusCreated {
			created++
		}
	}
	if len(statuses) != 1000 || created != 500 {
		t.Errorf("1000 items of 1 from 500: %d results, %d created; want 1000 and 500", len(statuses), created)
	}
}

// Concurrent batches that name the same accounts in opposite orders cannot
// deadlock: every batch locks all its accounts first, in ascending id order.
func TestConcurrentBatchesDoNotDeadlock(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	accts := make([]account, 6)
	for i := range accts {
		accts[i] = h.mustAccount(t, "USD")
		h.mustDeposit(t, accts[i].ID, 1000)
	}
	const n = 12
	failures := make([]string, n)
	parallel(n, func(i int) {
		var items []string
		for j := range accts {
			k := j
			if i%2 == 1 {
				k = len(accts) - 1 - j // the reverse order
			}
			items = append(items, paymentBody(accts[k].ID, accts[(k+1)%len(accts)].ID, 5, "USD"))
		}
		r := h.post(t, "/v1/payments/batch", newKey(), `{"items":[`+strings.Join(items, ",")+`]}`)
		if r.status != http.StatusOK {
			failures[i] = itoa(int64(r.status)) + " " + string(r.body)
			return
		}
		if statuses, _, _ := decodeBatch(t, r); strings.Trim(strings.Repeat("201 ", 6), " ") != joinInts(statuses) {
			failures[i] = "items " + joinInts(statuses)
		}
	})
	if f := strings.Join(nonEmpty(failures), "\n"); f != "" {
		t.Errorf("batches failed:\n%s", f)
	}
	if d := h.retries(t, "deadlock"); d != 0 {
		t.Errorf("%d deadlocks detected", d)
	}
	if got := h.count(t, "payments"); got != n*len(accts) {
		t.Errorf("%d payments, want %d", got, n*len(accts))
	}
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = itoa(int64(x))
	}
	return strings.Join(s, " ")
}

// When the database refuses an item's write that the domain allowed (here a
// trigger standing in for the last line of defence), only that item is
// rolled back, to its savepoint: the items around it commit, and the
// refused one leaves no payment, line or event behind.
func TestPaymentBatchItemRefusedByTheDatabase(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b := h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 100)
	_, err := h.pool.Exec(context.Background(), `
		CREATE FUNCTION refuse_13() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
		    IF (SELECT amount FROM payments WHERE id = NEW.payment_id) = 13 THEN
		        RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation', CONSTRAINT = 'accounts_books_nonnegative';
		    END IF;
		    RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_13 AFTER INSERT ON payment_transitions FOR EACH ROW EXECUTE FUNCTION refuse_13();`)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"items":[` + paymentBody(a.ID, b.ID, 10, "USD") + `,` + paymentBody(a.ID, b.ID, 13, "USD") + `,` + paymentBody(a.ID, b.ID, 20, "USD") + `]}`
	res := h.post(t, "/v1/payments/batch", newKey(), body).want(t, http.StatusOK)
	statuses, codes, _ := decodeBatch(t, res)
	if joinInts(statuses) != "201 422 201" || codes[1] != "insufficient_funds" {
		t.Fatalf("items = %v %v, want 201 422 201 with insufficient_funds", statuses, codes)
	}
	h.wantBooks(t, "the batch", map[string]books{a.ID: {70, 30, 0}})
	var lines, events int
	if err := h.pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM ledger_entries l JOIN accounts a ON a.id = l.account_id WHERE a.kind = 'customer' AND l.book = 'held'),
		(SELECT count(*) FROM events WHERE type = 'payment.created')`).Scan(&lines, &events); err != nil {
		t.Fatal(err)
	}
	if lines != 2 || events != 2 {
		t.Errorf("%d hold lines and %d payment events, want 2 and 2", lines, events)
	}
}
