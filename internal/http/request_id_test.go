package http_test

import (
	"bytes"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	apihttp "github.com/safeflow/safeflow/internal/http"
	"github.com/safeflow/safeflow/internal/store"
	"github.com/safeflow/safeflow/internal/testdb"
)

// lockedBuffer is a bytes.Buffer the server's goroutines may write.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A caller's X-Request-ID names the request everywhere: the response
// header, a problem's instance and the log lines. One that is not a usable
// id (spaces, other characters, too long, none) is replaced by a new one.
func TestRequestIDsAreTakenFromTheCaller(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	logs := &lockedBuffer{}
	h := startHarness(t, pool, pool, func(c *apihttp.Config, _ *store.Options) {
		c.Logger = zerolog.New(logs).Level(zerolog.InfoLevel)
	})
	missing := "/v1/accounts/acct_0000000000000000000000000"
	for _, tc := range []struct{ sent, want string }{
		{"req-4f1c_2026.11.22:01", "req-4f1c_2026.11.22:01"},
		{"0b8f8a3e-5d6c-4c1e-9c3a-2f8b1e7d6a90", "0b8f8a3e-5d6c-4c1e-9c3a-2f8b1e7d6a90"},
		{"two words", ""},
		{"</script>", ""},
		{strings.Repeat("a", 129), ""},
		{"", ""},
	} {
		r := send(t, h.request(t, http.MethodGet, missing, "", "X-Request-ID", tc.sent))
		p := r.wantProblem(t, http.StatusNotFound, "not_found")
		got := r.header.Get("X-Request-ID")
		switch {
		case tc.want != "" && got != tc.want:
			t.Errorf("sent X-Request-ID %q, got %q back; want it kept", tc.sent, got)
		case tc.want == "" && (got == tc.sent || len(got) != 20):
			t.Errorf("sent X-Request-ID %q, got %q back; want a new 20-character id", tc.sent, got)
		}
		if p.Instance != "urn:request:"+got {
			t.Errorf("instance %q, want urn:request:%s", p.Instance, got)
		}
		if !strings.Contains(logs.String(), `"request_id":"`+got+`"`) {
			t.Errorf("no log line names request %s:\n%s", got, logs.String())
		}
	}
}
