package http_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestBadInput sends malformed requests: each gets a clear problem, never a
// 500, and nothing is written or claimed.
func TestBadInput(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a := h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 100)
	deposits := "/v1/accounts/" + a.ID + "/deposits"
	rowsBefore := h.count(t, "movements") + h.count(t, "accounts") + h.count(t, "events") + h.count(t, "idempotency_keys")

	tests := []struct {
		name       string
		path, body string
		header     []string // pairs; "" deletes
		status     int
		code       string
		field      string // the field named in errors[], if any
	}{
		{"no idempotency key", "/v1/accounts", `{"currency":"USD"}`, []string{"Idempotency-Key", ""}, 400, "idempotency_key_missing", ""},
		{"empty idempotency key", "/v1/accounts", `{"currency":"USD"}`, []string{"Idempotency-Key", "", "Idempotency-Key", " "}, 400, "idempotency_key_invalid", ""},
		{"key too long", "/v1/accounts", `{"currency":"USD"}`, []string{"Idempotency-Key", strings.Repeat("k", 256)}, 400, "idempotency_key_invalid", ""},
		{"key not ASCII", "/v1/accounts", `{"currency":"USD"}`, []string{"Idempotency-Key", "clé"}, 400, "idempotency_key_invalid", ""},
		{"two keys", "/v1/accounts", `{"currency":"USD"}`, []string{"Idempotency-Key", "x1", "Idempotency-Key", "x2"}, 400, "idempotency_key_invalid", ""},
		{"unknown field", "/v1/accounts", `{"currency":"USD","colour":"red"}`, nil, 400, "invalid_request", "colour"},
		{"field name in capitals", deposits, `{"AMOUNT":5}`, nil, 400, "invalid_request", "AMOUNT"},
		{"field name in another case", "/v1/accounts", `{"Currency":"USD"}`, nil, 400, "invalid_request", "Currency"},
		{"duplicate field", deposits, `{"amount":5,"amount":6}`, nil, 400, "invalid_request", "amount"},
		{"duplicate field, same value", deposits, `{"amount":5,"amount":5}`, nil, 400, "invalid_request", "amount"},
		{"duplicate metadata key", "/v1/accounts", `{"currency":"USD","metadata":{"k":"a","k":"b"}}`, nil, 400, "invalid_request", "metadata.k"},
		{"batch item field in another case", "/v1/payments/batch", `{"items":[{"Amount":5}]}`, nil, 400, "invalid_request", "items[0].Amount"},
		{"batch item duplicate field", "/v1/payments/batch", `{"items":[{"amount":5,"amount":6}]}`, nil, 400, "invalid_request", "items[0].amount"},
		{"duplicate items", "/v1/payments/batch", `{"items":[],"items":[{}]}`, nil, 400, "invalid_request", "items"},
		{"trailing data", "/v1/accounts", `{"currency":"USD"} {}`, nil, 400, "invalid_request", "body"},
		{"malformed JSON", "/v1/accounts", `{"currency":`, nil, 400, "invalid_request", "body"},
		{"not an object", "/v1/accounts", `["USD"]`, nil, 400, "invalid_request", "body"},
		{"wrong type", "/v1/accounts", `{"currency":840}`, nil, 400, "invalid_request", "currency"},
		{"missing currency", "/v1/accounts", `{}`, nil, 400, "invalid_request", "currency"},
		{"empty body", "/v1/accounts", ``, nil, 400, "invalid_request", "currency"},
		{"lower-case currency", "/v1/accounts", `{"currency":"usd"}`, nil, 400, "invalid_request", "currency"},
		{"unknown currency", "/v1/accounts", `{"currency":"ABC"}`, nil, 400, "invalid_request", "currency"},
		{"name too long", "/v1/accounts", `{"currency":"USD","name":"` + strings.Repeat("n", 201) + `"}`, nil, 400, "invalid_request", "name"},
		{"metadata not strings", "/v1/accounts", `{"currency":"USD","metadata":{"a":1}}`, nil, 400, "invalid_request", ""},
		{"too much metadata", "/v1/accounts", `{"currency":"USD","metadata":{` + manyKeys(51) + `}}`, nil, 400, "invalid_request", "metadata"},
		{"not JSON", "/v1/accounts", `currency=USD`, []string{"Content-Type", "", "Content-Type", "application/x-www-form-urlencoded"}, 415, "unsupported_media_type", ""},
		{"no content type", "/v1/accounts", `{"currency":"USD"}`, []string{"Content-Type", ""}, 415, "unsupported_media_type", ""},
		{"too large", "/v1/accounts", `{"currency":"USD","name":"` + strings.Repeat("n", 1<<20) + `"}`, nil, 413, "payload_too_large", ""},
		{"zero amount", deposits, `{"amount":0}`, nil, 400, "invalid_request", "amount"},
		{"negative amount", deposits, `{"amount":-5}`, nil, 400, "invalid_request", "amount"},
		{"fractional amount", deposits, `{"amount":1.5}`, nil, 400, "invalid_request", "amount"},
		{"amount as string", deposits, `{"amount":"10"}`, nil, 400, "invalid_request", "amount"},
		{"huge amount", deposits, `{"amount":99999999999999999999}`, nil, 400, "invalid_request", "amount"},
		{"amount over the maximum", deposits, `{"amount":1000000000000001}`, nil, 400, "invalid_request", "amount"},
		{"missing amount", deposits, `{"reference":"x"}`, nil, 400, "invalid_request", "amount"},
		{"null amount", deposits, `{"amount":null}`, nil, 400, "invalid_request", "amount"},
		{"NUL in name", "/v1/accounts", `{"currency":"USD","name":"a\u0000b"}`, nil, 400, "invalid_request", "name"},
		{"NUL in metadata", "/v1/accounts", `{"currency":"USD","metadata":{"k":"\u0000"}}`, nil, 400, "invalid_request", "metadata.k"},
		{"NUL in metadata key", "/v1/accounts", `{"currency":"USD","metadata":{"\u0000":"v"}}`, nil, 400, "invalid_request", "metadata"},
		{"NUL in reference", deposits, `{"amount":1,"reference":"\u0000"}`, nil, 400, "invalid_request", "reference"},
		{"unknown route", "/v1/nothing", `{}`, nil, 404, "not_found", ""},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			header := append([]string{"Idempotency-Key", "bad-" + itoa(int64(i))}, tc.header...)
			if tc.header != nil && tc.header[0] == "Idempotency-Key" {
				header = tc.header
			}
			p := send(t, h.request(t, http.MethodPost, tc.path, tc.body, header...)).wantProblem(t, tc.status, tc.code)
			if tc.field != "" {
				found := false
				for _, e := range p.Errors {
					found = found || e.Field == tc.field && e.Message != ""
				}
				if !found {
					t.Errorf("errors = %+v, want one naming %q", p.Errors, tc.field)
				}
			}
		})
	}
	rowsAfter := h.count(t, "movements") + h.count(t, "accounts") + h.count(t, "events") + h.count(t, "idempotency_keys")
	if rowsAfter != rowsBefore {
		t.Errorf("bad requests wrote %d rows", rowsAfter-rowsBefore)
	}

	// Ids that cannot exist, down to bytes PostgreSQL would refuse: 404, never 500.
	for _, path := range []string{"/v1/accounts/%00", "/v1/accounts/%ff%fe", "/v1/accounts/acct_" + strings.Repeat("x", 5000),
		"/v1/accounts/%00/entries", "/v1/deposits/%ff", "/v1/withdrawals/" + a.ID, "/v1/payments/%00", "/v1/payments/%ff%fe",
		"/v1/payments/" + a.ID, "/v1/payments/pay_" + strings.Repeat("x", 5000)} {
		h.get(t, path).wantProblem(t, http.StatusNotFound, "not_found")
	}
	h.post(t, "/v1/accounts/%ff/deposits", "bad-id", `{"amount":1}`).wantProblem(t, http.StatusNotFound, "not_found")
	h.post(t, "/v1/payments/%00/cancel", "bad-payment-id", ``).wantProblem(t, http.StatusNotFound, "not_found")

	// A method the route does not have.
	send(t, h.request(t, http.MethodDelete, "/v1/accounts/"+a.ID, "")).wantProblem(t, http.StatusMethodNotAllowed, "method_not_allowed")
}

func TestValidationFailureDoesNotBurnTheKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a := h.mustAccount(t, "USD")
	h.post(t, "/v1/accounts/"+a.ID+"/deposits", "retry-me", `{"amount":-1}`).wantProblem(t, http.StatusBadRequest, "invalid_request")
	h.post(t, "/v1/accounts/"+a.ID+"/deposits", "retry-me", `{"amount":10,"extra":1}`).wantProblem(t, http.StatusBadRequest, "invalid_request")
	res := h.post(t, "/v1/accounts/"+a.ID+"/deposits", "retry-me", `{"amount":10}`).want(t, http.StatusCreated)
	if res.header.Get("Idempotent-Replayed") != "false" {
		t.Error("the corrected request was not executed fresh")
	}
}

func TestDomainRefusalsAreStoredAndReplayed(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a := h.mustAccount(t, "USD")
	h.mustDeposit(t, a.ID, 50)

	first := h.post(t, "/v1/accounts/"+a.ID+"/withdrawals", "too-much", `{"amount":80}`)
	first.wantProblem(t, http.StatusUnprocessableEntity, "insufficient_funds")
	h.mustDeposit(t, a.ID, 100) // now it would be affordable
	again := h.post(t, "/v1/accounts/"+a.ID+"/withdrawals", "too-much", `{"amount":80}`)
	again.wantProblem(t, http.StatusUnprocessableEntity, "insufficient_funds")
	if string(again.body) != string(first.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay = %s (replayed %q), want the stored refusal %s", again.body, again.header.Get("Idempotent-Replayed"), first.body)
	}
	if av, _, _ := h.balances(t, a.ID); av != 150 {
		t.Errorf("available = %d, want 150: the refusal must not withdraw", av)
	}

	// A 404 reached the domain too: stored, even once the id would exist.
	missing := "/v1/accounts/acct_06h00000000000000000000000/deposits"
	h.post(t, missing, "no-such", `{"amount":5}`).wantProblem(t, http.StatusNotFound, "not_found")
	res := h.post(t, missing, "no-such", `{"amount":5}`)
	res.wantProblem(t, http.StatusNotFound, "not_found")
	if res.header.Get("Idempotent-Replayed") != "true" {
		t.Error("the stored 404 was not replayed")
	}
}

func manyKeys(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + itoa(int64(i)) + `":"v"`)
	}
	return b.String()
}
