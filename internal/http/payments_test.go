package http_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type payment struct {
	ID             string            `json:"id"`
	Object         string            `json:"object"`
	Status         string            `json:"status"`
	Amount         int64             `json:"amount"`
	Currency       string            `json:"currency"`
	PayerAccountID string            `json:"payer_account_id"`
	PayeeAccountID string            `json:"payee_account_id"`
	Description    *string           `json:"description"`
	Metadata       map[string]string `json:"metadata"`
	Version        int64             `json:"version"`
}

func paymentBody(payer, payee string, amount int64, currency string) string {
	return `{"payer_account_id":"` + payer + `","payee_account_id":"` + payee + `","amount":` + itoa(amount) + `,"currency":"` + currency + `"}`
}

// createPayment posts a payment of amount in USD under a new key.
func (h *harness) createPayment(t *testing.T, payer, payee string, amount int64) response {
	t.Helper()
	return h.post(t, "/v1/payments", newKey(), paymentBody(payer, payee, amount, "USD"))
}

func (h *harness) mustPayment(t *testing.T, payer, payee string, amount int64) payment {
	t.Helper()
	var p payment
	h.createPayment(t, payer, payee, amount).want(t, http.StatusCreated).decode(t, &p)
	return p
}

// transition posts an action on a payment under key; header pairs follow.
func (h *harness) transition(t *testing.T, id, action, key string, header ...string) response {
	t.Helper()
	return send(t, h.request(t, http.MethodPost, "/v1/payments/"+id+"/"+action, "", append([]string{"Idempotency-Key", key}, header...)...))
}

func (h *harness) mustTransition(t *testing.T, id, action string) payment {
	t.Helper()
	var p payment
	h.transition(t, id, action, newKey()).want(t, http.StatusOK).decode(t, &p)
	return p
}

// books is an account's (available, held, incoming).
type books [3]int64

func (h *harness) books(t *testing.T, id string) books {
	t.Helper()
	av, he, in := h.balances(t, id)
	return books{av, he, in}
}

func (h *harness) wantBooks(t *testing.T, step string, want map[string]books) {
	t.Helper()
	for id, w := range want {
		if got := h.books(t, id); got != w {
			t.Errorf("after %s: %s books (available, held, incoming) = %v, want %v", step, id, got, w)
		}
	}
}

// The whole lifecycle, with every book checked after every step: create,
// confirm, settle, refund of a settled payment; create and cancel; create,
// confirm and refund of a confirmed payment.
func TestPaymentLifecycle(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b := h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 1000)

	created := h.post(t, "/v1/payments", "pay-1", `{"payer_account_id":"`+a.ID+`","payee_account_id":"`+b.ID+
		`","amount":300,"currency":"USD","description":"order 17","metadata":{"order":"17"}}`).want(t, http.StatusCreated)
	var p payment
	created.decode(t, &p)
	desc := "order 17"
	if diff := cmp.Diff(payment{ID: p.ID, Object: "payment", Status: "pending", Amount: 300, Currency: "USD", PayerAccountID: a.ID,
		PayeeAccountID: b.ID, Description: &desc, Metadata: map[string]string{"order": "17"}, Version: 1}, p); diff != "" {
		t.Errorf("created payment (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(p.ID, "pay_") || created.header.Get("Location") != "/v1/payments/"+p.ID || created.header.Get("ETag") != `"1"` {
		t.Errorf("id %s, Location %q, ETag %q", p.ID, created.header.Get("Location"), created.header.Get("ETag"))
	}
	h.wantBooks(t, "create", map[string]books{a.ID: {700, 300, 0}, b.ID: {0, 0, 0}})

	got := h.get(t, "/v1/payments/"+p.ID).want(t, http.StatusOK)
	if got.header.Get("ETag") != `"1"` {
		t.Errorf("GET ETag = %q, want \"1\"", got.header.Get("ETag"))
	}
	replay := h.post(t, "/v1/payments", "pay-1", `{"currency":"USD","amount":300,"payee_account_id":"`+b.ID+`","payer_account_id":"`+a.ID+
		`","metadata":{"order":"17"},"description":"order 17"}`).want(t, http.StatusCreated)
	if !bytes.Equal(replay.body, created.body) || replay.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay of the creation = %s, want the stored %s", replay.body, created.body)
	}

	steps := []struct {
		action, status string
		version        int64
		books          map[string]books
	}{
		{"confirm", "confirmed", 2, map[string]books{a.ID: {700, 0, 0}, b.ID: {0, 0, 300}}},
		{"settle", "settled", 3, map[string]books{a.ID: {700, 0, 0}, b.ID: {300, 0, 0}}},
		{"refund", "refunded", 4, map[string]books{a.ID: {1000, 0, 0}, b.ID: {0, 0, 0}}},
	}
	for _, s := range steps {
		res := h.transition(t, p.ID, s.action, "pay-1-"+s.action).want(t, http.StatusOK)
		var after payment
		res.decode(t, &after)
		if after.Status != s.status || after.Version != s.version || res.header.Get("ETag") != etag(s.version) ||
			res.header.Get("Idempotent-Replayed") != "false" || res.header.Get("Location") != "" {
			t.Errorf("%s: status %s version %d ETag %q replayed %q", s.action, after.Status, after.Version, res.header.Get("ETag"), res.header.Get("Idempotent-Replayed"))
		}
		h.wantBooks(t, s.action, s.books)
		again := h.transition(t, p.ID, s.action, "pay-1-"+s.action).want(t, http.StatusOK)
		if !bytes.Equal(again.body, res.body) || again.header.Get("Idempotent-Replayed") != "true" || again.header.Get("ETag") != etag(s.version) {
			t.Errorf("%s replay = %s, want the stored %s", s.action, again.body, res.body)
		}
		h.wantBooks(t, s.action+" replayed", s.books)
	}

	cancelled := h.mustPayment(t, a.ID, b.ID, 400)
	h.wantBooks(t, "second create", map[string]books{a.ID: {600, 400, 0}, b.ID: {0, 0, 0}})
	if c := h.mustTransition(t, cancelled.ID, "cancel"); c.Status != "cancelled" {
		t.Errorf("cancel: status %s", c.Status)
	}
	h.wantBooks(t, "cancel", map[string]books{a.ID: {1000, 0, 0}, b.ID: {0, 0, 0}})

	refunded := h.mustPayment(t, a.ID, b.ID, 250)
	h.mustTransition(t, refunded.ID, "confirm")
	h.wantBooks(t, "third confirm", map[string]books{a.ID: {750, 0, 0}, b.ID: {0, 0, 250}})
	if r := h.mustTransition(t, refunded.ID, "refund"); r.Status != "refunded" || r.Version != 3 {
		t.Errorf("refund of a confirmed payment: status %s version %d", r.Status, r.Version)
	}
	h.wantBooks(t, "refund of a confirmed payment", map[string]books{a.ID: {1000, 0, 0}, b.ID: {0, 0, 0}})

	// Every change left its event, in order per payment.
	rows, err := h.pool.Query(context.Background(), `SELECT type FROM events WHERE aggregate_id = $1 ORDER BY sequence`, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		types = append(types, s)
	}
	if diff := cmp.Diff([]string{"payment.created", "payment.confirmed", "payment.settled", "payment.refunded"}, types); diff != "" {
		t.Errorf("events of %s (-want +got):\n%s", p.ID, diff)
	}

	// The payer's ledger lines, newest first: the last journal released 250 back.
	var entries struct {
		Data []struct {
			Book   string `json:"book"`
			Amount int64  `json:"amount"`
		} `json:"data"`
	}
	h.get(t, "/v1/accounts/"+a.ID+"/entries?limit=1").want(t, http.StatusOK).decode(t, &entries)
	if len(entries.Data) != 1 || entries.Data[0].Book != "available" || entries.Data[0].Amount != 250 {
		t.Errorf("newest payer line = %+v, want available +250", entries.Data)
	}
}

func etag(v int64) string { return `"` + itoa(v) + `"` }

// Every action the state machine does not allow, from every status, is 409
// invalid_transition naming the current status; it changes nothing and is
// stored like any domain answer.
func TestForbiddenTransitions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b := h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 10_000)

	paths := map[string][]string{
		"pending":   nil,
		"confirmed": {"confirm"},
		"settled":   {"confirm", "settle"},
		"cancelled": {"cancel"},
		"refunded":  {"confirm", "refund"},
	}
	allowed := map[string][]string{"pending": {"confirm", "cancel"}, "confirmed": {"settle", "refund"}, "settled": {"refund"}}
	for status, path := range paths {
		p := h.mustPayment(t, a.ID, b.ID, 100)
		for _, action := range path {
			p = h.mustTransition(t, p.ID, action)
		}
		if p.Status != status {
			t.Fatalf("set-up: payment is %s, want %s", p.Status, status)
		}
		for _, action := range []string{"confirm", "settle", "cancel", "refund"} {
			if contains(allowed[status], action) {
				continue
			}
			before := h.books(t, a.ID)
			key := "forbidden-" + p.ID + "-" + action
			res := h.transition(t, p.ID, action, key)
			pr := res.wantProblem(t, http.StatusConflict, "invalid_transition")
			var body struct {
				CurrentStatus string `json:"current_status"`
			}
			res.decode(t, &body)
			if body.CurrentStatus != status || !strings.Contains(pr.Detail, action) {
				t.Errorf("%s from %s: current_status %q, detail %q", action, status, body.CurrentStatus, pr.Detail)
			}
			var now payment
			h.get(t, "/v1/payments/"+p.ID).want(t, http.StatusOK).decode(t, &now)
			if now.Status != status || now.Version != p.Version || h.books(t, a.ID) != before {
				t.Errorf("%s from %s changed something: payment %s v%d", action, status, now.Status, now.Version)
			}
			again := h.transition(t, p.ID, action, key)
			again.wantProblem(t, http.StatusConflict, "invalid_transition")
			if again.header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(again.body, res.body) {
				t.Errorf("%s from %s: the refusal was not stored and replayed", action, status)
			}
		}
	}
	h.transition(t, "pay_06h00000000000000000000000", "confirm", newKey()).wantProblem(t, http.StatusNotFound, "not_found")
	h.transition(t, "%ff", "confirm", newKey()).wantProblem(t, http.StatusNotFound, "not_found")
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// Refusals of a creation reach the domain and are stored; bad input does not
// and writes nothing.
func TestPaymentRefusals(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b, eur := h.mustAccount(t, "USD"), h.mustAccount(t, "USD"), h.mustAccount(t, "EUR")
	h.mustDeposit(t, a.ID, 100)
	other := h.newKey(t, "globex")
	foreign := send(t, h.request(t, http.MethodPost, "/v1/accounts", `{"currency":"USD"}`, "Idempotency-Key", "f", "Authorization", "", "Authorization", "Bearer "+other))
	var theirs account
	foreign.want(t, http.StatusCreated).decode(t, &theirs)

	refusals := []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"same account", paymentBody(a.ID, a.ID, 10, "USD"), 422, "same_account"},
		{"payee in another currency", paymentBody(a.ID, eur.ID, 10, "USD"), 422, "currency_mismatch"},
		{"payment in another currency", paymentBody(a.ID, b.ID, 10, "EUR"), 422, "currency_mismatch"},
		{"more than available", paymentBody(a.ID, b.ID, 101, "USD"), 422, "insufficient_funds"},
		{"unknown payer", paymentBody("acct_06h00000000000000000000000", b.ID, 10, "USD"), 404, "not_found"},
		{"another tenant's payee", paymentBody(a.ID, theirs.ID, 10, "USD"), 404, "not_found"},
		{"impossible payee id", paymentBody(a.ID, `\u0000`, 10, "USD"), 404, "not_found"},
	}
	for i, r := range refusals {
		key := "refused-" + itoa(int64(i))
		first := h.post(t, "/v1/payments", key, r.body)
		first.wantProblem(t, r.status, r.code)
		again := h.post(t, "/v1/payments", key, r.body)
		if again.status != r.status || again.header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(again.body, first.body) {
			t.Errorf("%s: replay %d %s (replayed %q), want the stored refusal", r.name, again.status, again.body, again.header.Get("Idempotent-Replayed"))
		}
	}
	if n := h.count(t, "payments"); n != 0 {
		t.Errorf("%d payments after refusals, want 0", n)
	}
	h.wantBooks(t, "refusals", map[string]books{a.ID: {100, 0, 0}})

	bad := []struct{ name, body, field string }{
		{"missing payer", `{"payee_account_id":"` + b.ID + `","amount":1,"currency":"USD"}`, "payer_account_id"},
		{"missing payee", `{"payer_account_id":"` + a.ID + `","amount":1,"currency":"USD"}`, "payee_account_id"},
		{"missing amount", `{"payer_account_id":"` + a.ID + `","payee_account_id":"` + b.ID + `","currency":"USD"}`, "amount"},
		{"zero amount", paymentBody(a.ID, b.ID, 0, "USD"), "amount"},
		{"missing currency", `{"payer_account_id":"` + a.ID + `","payee_account_id":"` + b.ID + `","amount":1}`, "currency"},
		{"bad currency", paymentBody(a.ID, b.ID, 1, "usd"), "currency"},
		{"unknown field", `{"payer_account_id":"` + a.ID + `","payee_account_id":"` + b.ID + `","amount":1,"currency":"USD","fee":1}`, "fee"},
		{"description too long", `{"payer_account_id":"` + a.ID + `","payee_account_id":"` + b.ID + `","amount":1,"currency":"USD","description":"` + strings.Repeat("d", 1001) + `"}`, "description"},
		{"payer not a string", `{"payer_account_id":5,"payee_account_id":"` + b.ID + `","amount":1,"currency":"USD"}`, "payer_account_id"},
	}
	for _, c := range bad {
		p := h.post(t, "/v1/payments", "bad-"+c.name, c.body).wantProblem(t, http.StatusBadRequest, "invalid_request")
		if len(p.Errors) == 0 || p.Errors[0].Field != c.field {
			t.Errorf("%s: errors %+v, want the first naming %s", c.name, p.Errors, c.field)
		}
	}
	// Bad input on a transition: a body with fields, or a malformed If-Match.
	p := h.mustPayment(t, a.ID, b.ID, 10)
	send(t, h.request(t, http.MethodPost, "/v1/payments/"+p.ID+"/confirm", `{"force":true}`, "Idempotency-Key", newKey())).
		wantProblem(t, http.StatusBadRequest, "invalid_request")
	h.transition(t, p.ID, "confirm", newKey(), "If-Match", "1").wantProblem(t, http.StatusBadRequest, "invalid_request")
	h.transition(t, p.ID, "confirm", newKey(), "Idempotency-Key", "").wantProblem(t, http.StatusBadRequest, "idempotency_key_missing")
	if got := h.count(t, "payment_transitions"); got != 1 {
		t.Errorf("%d transitions, want only the creation", got)
	}

	// A settled payment can only be refunded while the payee still has the money.
	h.mustTransition(t, p.ID, "confirm")
	h.mustTransition(t, p.ID, "settle")
	h.post(t, "/v1/accounts/"+b.ID+"/withdrawals", newKey(), `{"amount":5}`).want(t, http.StatusCreated)
	h.transition(t, p.ID, "refund", "refund-spent").wantProblem(t, http.StatusUnprocessableEntity, "insufficient_funds")
	h.wantBooks(t, "refused refund", map[string]books{a.ID: {90, 0, 0}, b.ID: {5, 0, 0}})
}

// If-Match: a stale version is refused with 412 and not stored, so the same
// key succeeds once the client sends the current version.
func TestIfMatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b := h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 100)
	p := h.mustPayment(t, a.ID, b.ID, 60)

	h.transition(t, p.ID, "confirm", "confirm-once", "If-Match", `"2"`).wantProblem(t, http.StatusPreconditionFailed, "precondition_failed")
	h.transition(t, p.ID, "confirm", "confirm-once", "If-Match", `W/"1"`).wantProblem(t, http.StatusPreconditionFailed, "precondition_failed")
	h.wantBooks(t, "412", map[string]books{a.ID: {40, 60, 0}, b.ID: {0, 0, 0}})
	res := h.transition(t, p.ID, "confirm", "confirm-once", "If-Match", `"7", "1"`).want(t, http.StatusOK)
	if res.header.Get("Idempotent-Replayed") != "false" || res.header.Get("ETag") != `"2"` {
		t.Errorf("confirm after 412s: replayed %q ETag %q", res.header.Get("Idempotent-Replayed"), res.header.Get("ETag"))
	}
	// The replay does not re-evaluate the precondition: it is the stored answer.
	h.transition(t, p.ID, "confirm", "confirm-once", "If-Match", `"1"`).want(t, http.StatusOK)
	// A stale version wins over an invalid transition: the client's view is out of date.
	h.transition(t, p.ID, "cancel", newKey(), "If-Match", `"1"`).wantProblem(t, http.StatusPreconditionFailed, "precondition_failed")
	h.transition(t, p.ID, "settle", newKey(), "If-Match", "*").want(t, http.StatusOK)
	h.wantBooks(t, "settle", map[string]books{a.ID: {40, 0, 0}, b.ID: {60, 0, 0}})
}

func TestListPayments(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b, c := h.mustAccount(t, "USD"), h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 1000)
	h.mustDeposit(t, b.ID, 1000)
	var ids []string // oldest first
	for i := range 5 {
		ids = append(ids, h.mustPayment(t, a.ID, b.ID, int64(10+i)).ID)
	}
	toC := h.mustPayment(t, b.ID, c.ID, 7)
	h.mustTransition(t, ids[1], "confirm")
	h.mustTransition(t, ids[3], "cancel")

	list := func(query string) ([]string, *string) {
		t.Helper()
		var l struct {
			Data       []payment `json:"data"`
			NextCursor *string   `json:"next_cursor"`
		}
		h.get(t, "/v1/payments"+query).want(t, http.StatusOK).decode(t, &l)
		var out []string
		for _, p := range l.Data {
			out = append(out, p.ID)
		}
		return out, l.NextCursor
	}
	all := []string{toC.ID, ids[4], ids[3], ids[2], ids[1], ids[0]}
	var walked []string
	query := "?limit=4"
	for {
		page, next := list(query)
		walked = append(walked, page...)
		if next == nil {
			break
		}
		query = "?limit=4&cursor=" + *next
	}
	for name, c := range map[string]struct {
		got, want []string
	}{
		"all, in pages of 4":     {walked, all},
		"empty filters":          {first(list("?status=&account_id=")), all},
		"pending":                {first(list("?status=pending")), []string{toC.ID, ids[4], ids[2], ids[0]}},
		"as payer or payee of b": {first(list("?account_id=" + b.ID)), all},
		"c":                      {first(list("?account_id=" + c.ID)), []string{toC.ID}},
		"pending of a":           {first(list("?account_id=" + a.ID + "&status=pending")), []string{ids[4], ids[2], ids[0]}},
		"confirmed of a, page 1": {first(list("?account_id=" + a.ID + "&status=confirmed&limit=1")), []string{ids[1]}},
		"unknown account":        {first(list("?account_id=acct_06h00000000000000000000000")), nil},
	} {
		if diff := cmp.Diff(c.want, c.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
	page, next := list("?account_id=" + a.ID + "&limit=2")
	if next == nil || len(page) != 2 {
		t.Fatalf("first page of a: %v, next %v", page, next)
	}
	rest, _ := list("?account_id=" + a.ID + "&limit=10&cursor=" + *next)
	if diff := cmp.Diff([]string{ids[2], ids[1], ids[0]}, rest); diff != "" {
		t.Errorf("second page of a (-want +got):\n%s", diff)
	}
	for _, q := range []string{"?status=done", "?account_id=pay_x", "?limit=0", "?cursor=not-ours"} {
		h.get(t, "/v1/payments"+q).wantProblem(t, http.StatusBadRequest, "invalid_request")
	}
	h.get(t, "/v1/payments/"+ids[0]+"x").wantProblem(t, http.StatusNotFound, "not_found")
}

func first(ids []string, _ *string) []string { return ids }

// Another tenant's payments are invisible: 404 on read and on every
// transition, absent from lists; its accounts cannot be paid from or to.
func TestPaymentsAreTenantScoped(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b := h.mustAccount(t, "USD"), h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 100)
	p := h.mustPayment(t, a.ID, b.ID, 40)

	other := &harness{pool: h.pool, store: h.store, url: h.url, key: h.newKey(t, "globex")}
	other.get(t, "/v1/payments/"+p.ID).wantProblem(t, http.StatusNotFound, "not_found")
	for _, action := range []string{"confirm", "settle", "cancel", "refund"} {
		other.transition(t, p.ID, action, "theirs-"+action).wantProblem(t, http.StatusNotFound, "not_found")
	}
	var l struct {
		Data []payment `json:"data"`
	}
	other.get(t, "/v1/payments").want(t, http.StatusOK).decode(t, &l)
	if len(l.Data) != 0 {
		t.Errorf("globex lists %d payments, want 0", len(l.Data))
	}
	other.get(t, "/v1/payments?account_id="+a.ID).want(t, http.StatusOK).decode(t, &l)
	if len(l.Data) != 0 {
		t.Errorf("globex lists %d payments of acme's account, want 0", len(l.Data))
	}
	c := other.mustAccount(t, "USD")
	other.mustDeposit(t, c.ID, 10)
	other.post(t, "/v1/payments", newKey(), paymentBody(c.ID, b.ID, 5, "USD")).wantProblem(t, http.StatusNotFound, "not_found")
	other.post(t, "/v1/payments", newKey(), paymentBody(a.ID, c.ID, 5, "USD")).wantProblem(t, http.StatusNotFound, "not_found")
	// The same key in both tenants is two requests.
	h.transition(t, p.ID, "confirm", "shared-key").want(t, http.StatusOK)
	other.transition(t, p.ID, "confirm", "shared-key").wantProblem(t, http.StatusNotFound, "not_found")
	h.wantBooks(t, "the other tenant's attempts", map[string]books{a.ID: {60, 0, 0}, b.ID: {0, 0, 40}})
	other.wantBooks(t, "its own attempts", map[string]books{c.ID: {10, 0, 0}})
}
