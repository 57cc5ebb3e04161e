package outbox

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEncodeEnvelope(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 21, 18, 25, 24, 606628000, time.UTC)
	payload, err := Encode(Message{
		ID: "evt_1", TenantID: "ten_1", Type: "deposit.created", AggregateType: "deposit", AggregateID: "dep_1",
		Sequence: 1, Data: map[string]any{"reference": "<wire & co>", "amount": 5}, CreatedAt: at,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"evt_1","type":"deposit.created","created_at":"2026-11-21T18:25:24.606628Z","aggregate_type":"deposit",` +
		`"aggregate_id":"dep_1","sequence":1,"data":{"amount":5,"reference":"<wire & co>"}}`
	if diff := cmp.Diff(want, string(payload)); diff != "" {
		t.Errorf("envelope bytes (-want +got):\n%s", diff)
	}
	if strings.Contains(string(payload), "ten_1") {
		t.Error("the envelope leaks the tenant id")
	}
	var e Envelope
	if err := json.Unmarshal(payload, &e); err != nil || e.Sequence != 1 || !e.CreatedAt.Equal(at) {
		t.Errorf("envelope does not decode back: %+v, %v", e, err)
	}
}
