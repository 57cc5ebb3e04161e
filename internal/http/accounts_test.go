package http_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestAccountLifecycle(t *testing.T) {
	t.Parallel()
	h := newHarness(t)

	res := h.post(t, "/v1/accounts", "open-1", `{"currency":"EUR","name":"Alice","metadata":{"team":"ops"}}`).want(t, http.StatusCreated)
	var a account
	res.decode(t, &a)
	if a.Object != "account" || a.Currency != "EUR" || a.Name == nil || *a.Name != "Alice" || a.Metadata["team"] != "ops" || a.Version != 1 {
		t.Fatalf("created account = %+v", a)
	}
	if got, want := res.header.Get("Location"), "/v1/accounts/"+a.ID; got != want {
		t.Errorf("Location = %q, want %q", got, want)
	}
	if got := res.header.Get("Idempotent-Replayed"); got != "false" {
		t.Errorf("Idempotent-Replayed = %q on a fresh request, want false", got)
	}
	if got := h.get(t, res.header.Get("Location")).want(t, http.StatusOK).header.Get("ETag"); got != `"1"` {
		t.Errorf("ETag = %s, want \"1\"", got)
	}
	if body := string(h.get(t, "/v1/accounts/"+a.ID+"/entries").want(t, http.StatusOK).body); body != `{"data":[],"next_cursor":null}`+"\n" {
		t.Errorf("entries of a new account = %s, want an empty page", body)
	}

	dep := h.post(t, "/v1/accounts/"+a.ID+"/deposits", "dep-1", `{"amount":1500,"reference":"inv-7"}`).want(t, http.StatusCreated)
	var d movement
	dep.decode(t, &d)
	if d.Object != "deposit" || d.Amount != 1500 || d.Currency != "EUR" || d.AccountID != a.ID || d.Reference == nil || *d.Reference != "inv-7" {
		t.Fatalf("deposit = %+v", d)
	}
	var again movement
	h.get(t, dep.header.Get("Location")).want(t, http.StatusOK).decode(t, &again)
	if diff := cmp.Diff(d, again); diff != "" {
		t.Errorf("GET %s differs from the creation (-created +got):\n%s", dep.header.Get("Location"), diff)
	}
	if av, held, in := h.balances(t, a.ID); av != 1500 || held != 0 || in != 0 {
		t.Fatalf("after deposit: balances %d/%d/%d, want 1500/0/0", av, held, in)
	}

	wd := h.post(t, "/v1/accounts/"+a.ID+"/withdrawals", "wd-1", `{"amount":400}`).want(t, http.StatusCreated)
	var w movement
	wd.decode(t, &w)
	if w.Object != "withdrawal" || w.Amount != 400 || w.Reference != nil {
		t.Fatalf("withdrawal = %+v", w)
	}
	h.get(t, wd.header.Get("Location")).want(t, http.StatusOK)
	res = h.get(t, "/v1/accounts/"+a.ID).want(t, http.StatusOK)
	res.decode(t, &a)
	if a.Balances.Available != 1100 || a.Version != 3 || res.header.Get("ETag") != `"3"` {
		t.Fatalf("after withdrawal: %+v, ETag %s; want available 1100, version 3", a, res.header.Get("ETag"))
	}

	// The ledger, newest first: each movement moved the account's available book.
	var entries struct {
		Data []struct {
			JournalID string `json:"journal_id"`
			AccountID string `json:"account_id"`
			Book      string `json:"book"`
			Amount    int64  `json:"amount"`
		} `json:"data"`
		NextCursor *string `json:"next_cursor"`
	}
	h.get(t, "/v1/accounts/"+a.ID+"/entries").want(t, http.StatusOK).decode(t, &entries)
	if len(entries.Data) != 2 || entries.Data[0].Amount != -400 || entries.Data[1].Amount != 1500 ||
		entries.Data[0].JournalID != w.JournalID || entries.Data[1].JournalID != d.JournalID || entries.NextCursor != nil {
		t.Fatalf("entries = %+v", entries)
	}
	for _, e := range entries.Data {
		if e.AccountID != a.ID || e.Book != "available" {
			t.Errorf("entry %+v: want account %s, book available", e, a.ID)
		}
	}
	if got := h.count(t, "events"); got != 3 {
		t.Errorf("events = %d, want 3 (account, deposit, withdrawal)", got)
	}
}

func TestListPagination(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var want []string
	for range 5 {
		want = append([]string{h.mustAccount(t, "USD").ID}, want...) // newest first
	}
	h.mustDeposit(t, want[0], 10)
	h.mustDeposit(t, want[0], 20)
	h.mustDeposit(t, want[0], 30)

	var got []string
	path := "/v1/accounts?limit=2"
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		var page struct {
			Data       []account `json:"data"`
			NextCursor *string   `json:"next_cursor"`
		}
		h.get(t, path).want(t, http.StatusOK).decode(t, &page)
		for _, a := range page.Data {
			got = append(got, a.ID)
		}
		if page.NextCursor == nil {
			break
		}
		path = "/v1/accounts?limit=2&cursor=" + *page.NextCursor
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("listed %v, want %v (newest first, each once)", got, want)
	}

	var entries struct {
		Data []struct {
			Amount int64 `json:"amount"`
		} `json:"data"`
		NextCursor *string `json:"next_cursor"`
	}
	h.get(t, "/v1/accounts/"+want[0]+"/entries?limit=2").want(t, http.StatusOK).decode(t, &entries)
	if len(entries.Data) != 2 || entries.Data[0].Amount != 30 || entries.Data[1].Amount != 20 || entries.NextCursor == nil {
		t.Fatalf("first page of entries = %+v", entries)
	}
	h.get(t, "/v1/accounts/"+want[0]+"/entries?limit=2&cursor="+*entries.NextCursor).want(t, http.StatusOK).decode(t, &entries)
	if len(entries.Data) != 1 || entries.Data[0].Amount != 10 || entries.NextCursor != nil {
		t.Fatalf("second page of entries = %+v", entries)
	}

	h.get(t, "/v1/accounts?limit=0").wantProblem(t, http.StatusBadRequest, "invalid_request")
	h.get(t, "/v1/accounts?limit=101").wantProblem(t, http.StatusBadRequest, "invalid_request")
	h.get(t, "/v1/accounts?limit=ten").wantProblem(t, http.StatusBadRequest, "invalid_request")
	p := h.get(t, "/v1/accounts?cursor=not-a-cursor").wantProblem(t, http.StatusBadRequest, "invalid_request")
	if len(p.Errors) != 1 || p.Errors[0].Field != "cursor" {
		t.Errorf("errors = %+v, want one for cursor", p.Errors)
	}
}

func TestReplayIsByteIdentical(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	first := h.post(t, "/v1/accounts", "replay-me", `{"currency":"USD","name":"Bob","metadata":{"a":"1","b":"2"}}`).want(t, http.StatusCreated)
	// Same request: other key order, other whitespace.
	second := h.post(t, "/v1/accounts", "replay-me", "{ \"metadata\": {\"b\":\"2\", \"a\":\"1\"},\n \"name\":\"Bob\", \"currency\":\"USD\" }")

	if second.status != first.status || !bytes.Equal(second.body, first.body) {
		t.Fatalf("replay = %d %s\nwant %d %s", second.status, second.body, first.status, first.body)
	}
	for _, hd := range []string{"Location", "Content-Type", "ETag"} {
		if second.header.Get(hd) != first.header.Get(hd) {
			t.Errorf("replayed %s = %q, want %q", hd, second.header.Get(hd), first.header.Get(hd))
		}
	}
	if got := second.header.Get("Idempotent-Replayed"); got != "true" {
		t.Errorf("Idempotent-Replayed = %q, want true", got)
	}
	if n := h.count(t, "accounts WHERE kind = 'customer'"); n != 1 {
		t.Errorf("accounts = %d, want 1", n)
	}
}

func TestKeyReuseWithAnotherRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a := h.mustAccount(t, "USD")
	h.post(t, "/v1/accounts/"+a.ID+"/deposits", "k", `{"amount":100}`).want(t, http.StatusCreated)

	h.post(t, "/v1/accounts/"+a.ID+"/deposits", "k", `{"amount":101}`).wantProblem(t, http.StatusUnprocessableEntity, "idempotency_key_reused")
	h.post(t, "/v1/accounts/"+a.ID+"/withdrawals", "k", `{"amount":100}`).wantProblem(t, http.StatusUnprocessableEntity, "idempotency_key_reused")
	h.post(t, "/v1/accounts", "k", `{"currency":"USD"}`).wantProblem(t, http.StatusUnprocessableEntity, "idempotency_key_reused")
	b := h.mustAccount(t, "USD")
	h.post(t, "/v1/accounts/"+b.ID+"/deposits", "k", `{"amount":100}`).wantProblem(t, http.StatusUnprocessableEntity, "idempotency_key_reused")

	// The refusals were not stored: the original still replays.
	res := h.post(t, "/v1/accounts/"+a.ID+"/deposits", "k", `{"amount":100}`).want(t, http.StatusCreated)
	if res.header.Get("Idempotent-Replayed") != "true" {
		t.Error("the original request no longer replays")
	}
	if av, _, _ := h.balances(t, a.ID); av != 100 {
		t.Errorf("available = %d, want 100", av)
	}
}

func TestSameKeyInTwoTenants(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	acme := h.key
	globex := h.newKey(t, "globex")

	first := send(t, h.request(t, "POST", "/v1/accounts", `{"currency":"USD"}`, "Idempotency-Key", "shared"))
	h.key = globex
	second := send(t, h.request(t, "POST", "/v1/accounts", `{"currency":"USD"}`, "Idempotency-Key", "shared"))
	first.want(t, http.StatusCreated)
	second.want(t, http.StatusCreated)
	if second.header.Get("Idempotent-Replayed") != "false" || bytes.Equal(first.body, second.body) {
		t.Fatalf("globex got acme's answer: %s", second.body)
	}
	var a, b account
	first.decode(t, &a)
	second.decode(t, &b)

	// Each tenant sees only its own account; the other's is 404, never 403.
	h.get(t, "/v1/accounts/"+a.ID).wantProblem(t, http.StatusNotFound, "not_found")
	h.get(t, "/v1/accounts/"+a.ID+"/entries").wantProblem(t, http.StatusNotFound, "not_found")
	h.post(t, "/v1/accounts/"+a.ID+"/deposits", newKey(), `{"amount":5}`).wantProblem(t, http.StatusNotFound, "not_found")
	var list struct {
		Data []account `json:"data"`
	}
	h.get(t, "/v1/accounts").want(t, http.StatusOK).decode(t, &list)
	if len(list.Data) != 1 || list.Data[0].ID != b.ID {
		t.Errorf("globex lists %+v, want only %s", list.Data, b.ID)
	}
	h.key = acme
	h.get(t, "/v1/accounts/"+b.ID).wantProblem(t, http.StatusNotFound, "not_found")
	h.get(t, "/v1/accounts/"+a.ID).want(t, http.StatusOK)
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for name, auth := range map[string]string{
		"missing":      "",
		"unknown key":  "Bearer sk_unknown",
		"other scheme": "Basic " + h.key,
		"empty bearer": "Bearer ",
	} {
		req := h.request(t, "POST", "/v1/accounts", `{"currency":"USD"}`, "Idempotency-Key", "auth-"+name, "Authorization", "")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res := send(t, req)
		res.wantProblem(t, http.StatusUnauthorized, "unauthorized")
		if res.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: no WWW-Authenticate header", name)
		}
	}
	if n := h.count(t, "idempotency_keys"); n != 0 {
		t.Errorf("idempotency records = %d after 401s, want 0", n)
	}
	h.post(t, "/v1/accounts", "auth-missing", `{"currency":"USD"}`).want(t, http.StatusCreated)
}
