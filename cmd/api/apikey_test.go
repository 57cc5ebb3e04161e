package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/safeflow/safeflow/internal/testdb"
)

// api apikey list shows a tenant's keys without their secrets; api apikey
// revoke makes two running servers on the database refuse the key within
// 2 s, while the tenant's other key keeps working.
func TestAPIKeysAreListedAndRevokedEverywhereWithinTwoSeconds(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	vars := map[string]string{"DATABASE_URL": pool.Config().ConnString(), "LOG_LEVEL": "error", "RELAY_ENABLED": "false"}
	api := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, env(vars), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	_, first, _ := api("apikey", "create", "--tenant", "acme")
	_, second, _ := api("apikey", "create", "--tenant", "acme")
	first, second = strings.TrimSpace(first), strings.TrimSpace(second)
	code, list, _ := api("apikey", "list", "--tenant", "acme")
	rows := strings.Split(strings.TrimSpace(list), "\n")
	if code != 0 || len(rows) != 3 || !strings.HasPrefix(rows[0], "ID") || strings.Contains(list, first) || strings.Contains(list, second) {
		t.Fatalf("apikey list: exit %d\n%s\nwant a header and two keys, without their secrets", code, list)
	}
	row := regexp.MustCompile(`^(key_\S+)\s+(sk_\S+)\s+(\S+)\s+-$`).FindStringSubmatch(rows[1])
	if row == nil || !strings.HasPrefix(first, row[2]) {
		t.Fatalf("first row %q: want the id, the first key's prefix, its creation and - (not revoked)", rows[1])
	}
	id := row[1]
	if code, _, errOut := api("apikey", "list", "--tenant", "nobody"); code != 1 || !strings.Contains(errOut, "nobody") {
		t.Errorf("apikey list of an unknown tenant: exit %d, %q; want 1 naming it", code, errOut)
	}
	if code, _, errOut := api("apikey", "revoke", "key_nope"); code != 1 || !strings.Contains(errOut, "key_nope") {
		t.Errorf("apikey revoke of an unknown id: exit %d, %q; want 1 naming it", code, errOut)
	}

	// Two servers on the database, each having accepted both keys (their
	// caches are warm).
	var bases []string
	for range 2 {
		ctx, stop := context.WithCancel(context.Background())
		own := map[string]string{"HTTP_ADDR": freeAddr(t)}
		for k, v := range vars {
			own[k] = v
		}
		done := make(chan int, 1)
		go func() { done <- run(ctx, []string{"serve"}, env(own), io.Discard, io.Discard) }()
		t.Cleanup(func() { stop(); <-done })
		bases = append(bases, "http://"+own["HTTP_ADDR"])
		waitReady(t, bases[len(bases)-1])
	}
	status := func(base, secret string) int {
		req, _ := http.NewRequest("GET", base+"/v1/accounts", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, b := range bases {
		if s1, s2 := status(b, first), status(b, second); s1 != 200 || s2 != 200 {
			t.Fatalf("%s before the revocation: %d and %d, want 200", b, s1, s2)
		}
	}
	code, out, errOut := api("apikey", "revoke", id)
	revoked := time.Now()
	if code != 0 || !strings.HasPrefix(out, "revoked "+id+" at ") {
		t.Fatalf("apikey revoke: exit %d, %q %q", code, out, errOut)
	}
	for _, b := range bases {
		for status(b, first) != http.StatusUnauthorized {
			if time.Since(revoked) > 2*time.Second {
				t.Fatalf("%s still accepts the revoked key %v after the revocation", b, time.Since(revoked))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if s := status(b, second); s != 200 {
			t.Errorf("%s refuses the tenant's other key: %d", b, s)
		}
	}
	t.Logf("both servers refused the revoked key %v after the revocation", time.Since(revoked).Round(time.Millisecond))
	if _, list, _ := api("apikey", "list", "--tenant", "acme"); !regexp.MustCompile(id + `\s+\S+\s+\S+\s+\d{4}-`).MatchString(list) {
		t.Errorf("apikey list after the revocation does not show when %s was revoked:\n%s", id, list)
	}
	if code, out, _ := api("apikey", "revoke", id); code != 0 || !strings.HasPrefix(out, "revoked "+id) {
		t.Errorf("revoking again: exit %d, %q; want 0, nothing changed", code, out)
	}
}
