package http_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/safeflow/safeflow/internal/relay"
	"github.com/safeflow/safeflow/internal/relaytest"
)

// startRelay runs a relay on the harness's database with relaytest's fast
// settings, changed by cfg; it is shut down when the test ends, before the
// invariants are checked.
func (h *harness) startRelay(t *testing.T, cfg func(*relay.Config)) *relaytest.Relay {
	t.Helper()
	return relaytest.StartRelay(t, h.pool, cfg)
}

type endpoint struct {
	ID         string   `json:"id"`
	Object     string   `json:"object"`
	URL        string   `json:"url"`
	EventTypes []string `json:"event_types"`
	Status     string   `json:"status"`
	Secret     string   `json:"secret"`
}

// delivery is the API's delivery as a client decodes it.
type delivery struct {
	ID             string     `json:"id"`
	EventID        string     `json:"event_id"`
	EndpointID     string     `json:"endpoint_id"`
	Status         string     `json:"status"`
	Attempts       int        `json:"attempts"`
	LastError      *string    `json:"last_error"`
	LastStatusCode *int       `json:"last_status_code"`
	NextAttemptAt  *time.Time `json:"next_attempt_at"`
	DeliveredAt    *time.Time `json:"delivered_at"`
}

// mustEndpoint subscribes url to types (all when none) and returns it, secret included.
func (h *harness) mustEndpoint(t *testing.T, url string, types ...string) endpoint {
	t.Helper()
	body := map[string]any{"url": url}
	if len(types) > 0 {
		body["event_types"] = types
	}
	b, _ := json.Marshal(body)
	var e endpoint
	h.post(t, "/v1/webhook-endpoints", newKey(), string(b)).want(t, http.StatusCreated).decode(t, &e)
	return e
}

// deliveries lists every delivery matching the query (e.g. "status=dead").
func (h *harness) deliveries(t *testing.T, query string) []delivery {
	t.Helper()
	var all []delivery
	cursor := ""
	for {
		var page struct {
			Data       []delivery `json:"data"`
			NextCursor *string    `json:"next_cursor"`
		}
		h.get(t, "/v1/webhook-deliveries?limit=100&"+query+cursor).want(t, http.StatusOK).decode(t, &page)
		all = append(all, page.Data...)
		if page.NextCursor == nil {
			return all
		}
		cursor = "&cursor=" + *page.NextCursor
	}
}

func atoi(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }
