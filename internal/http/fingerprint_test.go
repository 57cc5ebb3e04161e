package http

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/safeflow/safeflow/internal/domain"
)

// fingerprintOf routes a request through a router with the API's route
// shapes and returns its fingerprint after decoding the body like the API.
func fingerprintOf(t *testing.T, method, target, body string) []byte {
	t.Helper()
	var got []byte
	r := chi.NewRouter()
	h := func(w http.ResponseWriter, r *http.Request) {
		in, err := decode[movementRequest](w, r)
		if err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
		got = fingerprint(r, in)
	}
	r.Post("/v1/accounts/{account_id}/deposits", h)
	r.Post("/v1/accounts/{account_id}/withdrawals", h)
	req := httptest.NewRequest(method, target, bytes.NewBufferString(body))
	req.Header.Set("Content-Type", "application/json")
	r.ServeHTTP(httptest.NewRecorder(), req.WithContext(context.Background()))
	return got
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	base := fingerprintOf(t, "POST", "/v1/accounts/acct_a/deposits", `{"amount":10,"reference":"x"}`)
	same := []struct{ name, target, body string }{
		{"key order", "/v1/accounts/acct_a/deposits", `{"reference":"x","amount":10}`},
		{"whitespace", "/v1/accounts/acct_a/deposits", "{ \"amount\" : 10 ,\n \"reference\" : \"x\" }"},
	}
	for _, tc := range same {
		if got := fingerprintOf(t, "POST", tc.target, tc.body); !bytes.Equal(got, base) {
			t.Errorf("%s changed the fingerprint", tc.name)
		}
	}
	differ := []struct{ name, target, body string }{
		{"amount", "/v1/accounts/acct_a/deposits", `{"amount":11,"reference":"x"}`},
		{"reference", "/v1/accounts/acct_a/deposits", `{"amount":10,"reference":"y"}`},
		{"no reference", "/v1/accounts/acct_a/deposits", `{"amount":10}`},
		{"path parameter", "/v1/accounts/acct_b/deposits", `{"amount":10,"reference":"x"}`},
		{"route", "/v1/accounts/acct_a/withdrawals", `{"amount":10,"reference":"x"}`},
		{"query", "/v1/accounts/acct_a/deposits?dry=1", `{"amount":10,"reference":"x"}`},
	}
	for _, tc := range differ {
		if got := fingerprintOf(t, "POST", tc.target, tc.body); bytes.Equal(got, base) {
			t.Errorf("another %s gave the same fingerprint", tc.name)
		}
	}
}

func TestCheckIdempotencyKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		values []string
		code   string // "" when valid
	}{
		{nil, domain.CodeIdempotencyKeyMissing},
		{[]string{""}, domain.CodeIdempotencyKeyInvalid},
		{[]string{"a", "b"}, domain.CodeIdempotencyKeyInvalid},
		{[]string{string(bytes.Repeat([]byte("k"), 256))}, domain.CodeIdempotencyKeyInvalid},
		{[]string{"tab\there"}, domain.CodeIdempotencyKeyInvalid},
		{[]string{"ünïcode"}, domain.CodeIdempotencyKeyInvalid},
		{[]string{"k"}, ""},
		{[]string{string(bytes.Repeat([]byte("k"), 255))}, ""},
		{[]string{`"quoted with spaces ~!"`}, ""},
		{[]string{"5f0c6a52-3b7e-4a57-9d2c-0d7f1f6a9a10"}, ""},
	}
	for _, tc := range tests {
		err := domain.CheckIdempotencyKey(tc.values)
		switch {
		case tc.code == "" && err != nil:
			t.Errorf("%q: %v, want valid", tc.values, err)
		case tc.code != "" && (err == nil || err.Code != tc.code):
			t.Errorf("%q: %v, want %s", tc.values, err, tc.code)
		}
	}
}

// A batch is fingerprinted on its decoded items: the key order and spacing
// inside an item do not matter, the order of the items does.
func TestBatchFingerprint(t *testing.T) {
	t.Parallel()
	of := func(body string) []byte {
		t.Helper()
		var got []byte
		r := chi.NewRouter()
		r.Post("/v1/payments/batch", func(w http.ResponseWriter, r *http.Request) {
			in, err := decode[batchRequest](w, r)
			if err != nil {
				t.Fatalf("decode %s: %v", body, err)
			}
			got = fingerprint(r, in)
		})
		req := httptest.NewRequest("POST", "/v1/payments/batch", bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		r.ServeHTTP(httptest.NewRecorder(), req)
		return got
	}
	x := `{"payer_account_id":"acct_a","payee_account_id":"acct_b","amount":1,"currency":"USD"}`
	y := `{"payer_account_id":"acct_b","payee_account_id":"acct_a","amount":2,"currency":"USD"}`
	base := of(`{"items":[` + x + `,` + y + `]}`)
	if got := of(`{"items":[ {"currency":"USD", "amount":1, "payee_account_id":"acct_b","payer_account_id":"acct_a"},` + y + `]}`); !bytes.Equal(got, base) {
		t.Error("key order inside an item changed the fingerprint")
	}
	if got := of(`{"items":[` + y + `,` + x + `]}`); bytes.Equal(got, base) {
		t.Error("the order of the items did not change the fingerprint")
	}
}
