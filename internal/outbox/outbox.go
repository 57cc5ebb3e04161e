// Package outbox owns the transactional outbox: events are staged in the
// business transaction that causes them and delivered later (the event
// feed, and webhooks by internal/relay). Events are immutable; the exact
// bytes of each envelope are stored once, so the feed and every webhook
// delivery serve and sign the same bytes. It depends on pgx only.
package outbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The terms of the fan-out that SQL and Go share. The trigger events_fan_out
// (migrations/00004_webhooks.sql) turns each event, in its own transaction,
// into one pending webhook delivery per subscribed endpoint; it spells
// these in SQL, and a test in internal/store checks it spells them so.
const (
	// Channel is the NOTIFY channel that wakes relays when deliveries
	// become due: the trigger and the retry flows of internal/store send on
	// it in their transactions, so it fires at commit; internal/relay
	// listens on it.
	Channel = "safeflow_deliveries"
)

// Message is one event to stage. Data is the resource after the change.
type Message struct {
	ID            string
	TenantID      string
	Type          string // e.g. "deposit.created"
	AggregateType string // e.g. "deposit"
	AggregateID   string
	// Sequence increases per aggregate; the caller holds the aggregate's row
	// lock (or creates the aggregate), so its version is a safe sequence.
	Sequence  int64
	Data      any
	CreatedAt time.Time
}

// Envelope is the JSON form of an event, served by the feed and signed for
// webhooks.
type Envelope struct {
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	CreatedAt     time.Time       `json:"created_at"`
	AggregateType string          `json:"aggregate_type"`
	AggregateID   string          `json:"aggregate_id"`
	Sequence      int64           `json:"sequence"`
	Data          json.RawMessage `json:"data"`
}

// insertEvent writes an event with its feed key (migrations/00005): the
// greater of this transaction's xid and the key of the aggregate's previous
// event, so the feed serves an aggregate's events in sequence order.
const insertEvent = `
INSERT INTO events (id, tenant_id, type, aggregate_type, aggregate_id, sequence, payload, created_at, feed_xid)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, greatest(pg_current_xact_id(), (
    SELECT p.feed_xid FROM events p
    WHERE p.tenant_id = $2 AND p.aggregate_type = $4 AND p.aggregate_id = $5 AND p.sequence < $6
    ORDER BY p.sequence DESC LIMIT 1)))`

// Stage queues the insert of m on b. The batch must be sent on the business
// transaction (tx.SendBatch), so the event commits or rolls back with the
// change it describes.
func Stage(b *pgx.Batch, m Message) error {
	payload, err := Encode(m)
	if err != nil {
		return err
	}
	b.Queue(insertEvent, m.ID, m.TenantID, m.Type, m.AggregateType, m.AggregateID, m.Sequence, payload, m.CreatedAt)
	return nil
}

// Encode returns the envelope bytes of m: one line of JSON, without HTML
// escaping, so data reads as the API renders the resource.
func Encode(m Message) ([]byte, error) {
	data, err := encode(m.Data)
	if err != nil {
		return nil, fmt.Errorf("outbox: encode %s data: %w", m.Type, err)
	}
	payload, err := encode(Envelope{
		ID: m.ID, Type: m.Type, CreatedAt: m.CreatedAt, AggregateType: m.AggregateType,
		AggregateID: m.AggregateID, Sequence: m.Sequence, Data: data,
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: encode %s envelope: %w", m.Type, err)
	}
	return payload, nil
}

func encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
