package domain

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Id prefixes of webhooks.
const (
	PrefixEndpoint = "we_"
	PrefixDelivery = "del_"
)

// EventTypes lists every event type (product.md §4), in the order of the
// contract; an endpoint may subscribe to any of them.
var EventTypes = []string{
	"account.created", "deposit.created", "withdrawal.created",
	"payment.created", "payment.confirmed", "payment.settled", "payment.cancelled", "payment.refunded",
}

// Endpoint statuses. An endpoint is disabled when it answers 410 Gone; its
// deliveries then go dead until they are replayed, which enables it again.
const (
	EndpointEnabled  = "enabled"
	EndpointDisabled = "disabled"
)

// Delivery statuses.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryDead      = "dead"
)

// DeliveryStatuses lists every status a delivery can have.
var DeliveryStatuses = []string{DeliveryPending, DeliveryDelivered, DeliveryDead}

// MaxURLLen bounds a webhook URL.
const MaxURLLen = 2048

// WebhookEndpoint is a URL that receives the tenant's events; its JSON form
// is the API's shape. Secret is set only in the answers that created it or
// rotated it.
type WebhookEndpoint struct {
	ID         string    `json:"id"`
	Object     string    `json:"object"` // always "webhook_endpoint"
	URL        string    `json:"url"`
	EventTypes []string  `json:"event_types"`
	Status     string    `json:"status"`
	CreatedAt  time.Time `json:"created_at"`
	Secret     string    `json:"secret,omitempty"`
	TenantID   string    `json:"-"`
}

// NewWebhookEndpoint is a validated request to subscribe a URL.
type NewWebhookEndpoint struct {
	URL        string
	EventTypes []string // empty: every type
}

// Create builds the endpoint with a new signing secret.
func (n NewWebhookEndpoint) Create(tenantID string, now time.Time) WebhookEndpoint {
	return WebhookEndpoint{
		ID: NewID(PrefixEndpoint, now), Object: "webhook_endpoint", URL: n.URL, EventTypes: dedupe(n.EventTypes),
		Status: EndpointEnabled, CreatedAt: now, Secret: NewWebhookSecret(), TenantID: tenantID,
	}
}

// NewWebhookSecret is a new signing secret: "whsec_" and the base64 of 32
// random bytes, as Standard Webhooks describes.
func NewWebhookSecret() string {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic("domain: crypto/rand failed: " + err.Error())
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

func dedupe(in []string) []string {
	out := []string{}
	for _, t := range in {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// EndpointChange is a validated change of an endpoint (PATCH): the fields
// that are set replace the endpoint's.
type EndpointChange struct {
	URL        *string
	EventTypes *[]string
	Status     *string // EndpointEnabled or EndpointDisabled
}

// Apply returns e with the change made.
func (c EndpointChange) Apply(e WebhookEndpoint) WebhookEndpoint {
	if c.URL != nil {
		e.URL = *c.URL
	}
	if c.EventTypes != nil {
		e.EventTypes = dedupe(*c.EventTypes)
	}
	if c.Status != nil {
		e.Status = *c.Status
	}
	return e
}

// The previous secret stays valid for DefaultSecretOverlap after a rotation
// unless the request says otherwise, at most MaxSecretOverlap.
const (
	DefaultSecretOverlap = 24 * time.Hour
	MaxSecretOverlap     = 7 * 24 * time.Hour
)

// CheckWebhookURL reports a problem with the form of a webhook URL, or "".
// Where it points (private addresses) is checked by the caller, which can
// resolve names.
func CheckWebhookURL(raw string) string {
	if raw == "" {
		return "is required"
	}
	if len(raw) > MaxURLLen {
		return fmt.Sprintf("must be at most %d characters", MaxURLLen)
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil || !u.IsAbs() || u.Opaque != "":
		return "must be an absolute http or https URL"
	case u.Scheme != "http" && u.Scheme != "https":
		return "must use http or https"
	case u.Hostname() == "":
		return "must name a host"
	case u.User != nil:
		return "must not carry credentials; put a token in the path or query instead"
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return "must not have a fragment"
	}
	return ""
}

// CheckEventTypes returns the problems of an event_types filter.
func CheckEventTypes(field string, types []string) []FieldError {
	var fe []FieldError
	for i, t := range types {
		if !slices.Contains(EventTypes, t) {
			fe = append(fe, FieldError{fmt.Sprintf("%s[%d]", field, i), "is not an event type; one of " + strings.Join(EventTypes, ", ")})
		}
	}
	return fe
}

// Delivery is the state of one event's delivery to one endpoint; its JSON
// form is the API's shape.
type Delivery struct {
	ID             string     `json:"id"`
	Object         string     `json:"object"` // always "webhook_delivery"
	EventID        string     `json:"event_id"`
	EndpointID     string     `json:"endpoint_id"`
	Status         string     `json:"status"`
	Attempts       int        `json:"attempts"`
	LastError      *string    `json:"last_error"`
	LastStatusCode *int       `json:"last_status_code"`
	NextAttemptAt  *time.Time `json:"next_attempt_at"`
	DeliveredAt    *time.Time `json:"delivered_at"`
	CreatedAt      time.Time  `json:"created_at"`
}

// Retry makes a dead delivery pending again, due now, with its attempts
// counted afresh. Anything but a dead delivery is refused: a pending one is
// already on its way and a delivered one has arrived.
func (d Delivery) Retry(now time.Time) (Delivery, error) {
	if d.Status != DeliveryDead {
		return d, &Error{Kind: KindConflict, Code: CodeInvalidTransition, CurrentStatus: d.Status,
			Detail: fmt.Sprintf("delivery %s is %s; only a dead delivery can be retried", d.ID, d.Status)}
	}
	d.Status, d.Attempts, d.NextAttemptAt = DeliveryPending, 0, &now
	return d, nil
}

// DeliveryFilter narrows a list of deliveries; empty fields do not filter.
type DeliveryFilter struct {
	Status     string
	EndpointID string
}

// Replay is the answer to replaying an endpoint's dead deliveries.
type Replay struct {
	Object     string `json:"object"` // always "webhook_replay"
	EndpointID string `json:"endpoint_id"`
	Replayed   int    `json:"replayed"` // dead deliveries made pending
}
