// Package http is safeflow's REST API: routing, authentication, strict JSON
// decoding, RFC 9457 problems, metrics and the mapping of requests onto the
// store's safe flows. HTTP details stay here; decisions live in domain.
package http

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/netguard"
)

// Store is what the API needs from the database; *store.Store satisfies it.
type Store interface {
	Authenticate(ctx context.Context, secret string) (tenantID string, err error)
	CreateAccount(ctx context.Context, req domain.Request[domain.Account], in domain.NewAccount) (domain.Response, error)
	GetAccount(ctx context.Context, tenantID, id string) (domain.Account, error)
	ListAccounts(ctx context.Context, tenantID string, p domain.Page) ([]domain.Account, string, error)
	ListEntries(ctx context.Context, tenantID, accountID string, p domain.Page) ([]domain.LedgerEntry, string, error)
	Move(ctx context.Context, req domain.Request[domain.Movement], in domain.NewMovement) (domain.Response, error)
	GetMovement(ctx context.Context, tenantID, kind, id string) (domain.Movement, error)
	CreatePayment(ctx context.Context, req domain.Request[domain.Payment], in domain.NewPayment) (domain.Response, error)
	CreatePayments(ctx context.Context, req domain.Request[[]domain.BatchItem], items []domain.NewPayment) (domain.Response, error)
	TransitionPayment(ctx context.Context, req domain.Request[domain.Payment], id, action string, pre domain.Precondition) (domain.Response, error)
	GetPayment(ctx context.Context, tenantID, id string) (domain.Payment, error)
	ListPayments(ctx context.Context, tenantID string, f domain.PaymentFilter, p domain.Page) ([]domain.Payment, string, error)
	ListEvents(ctx context.Context, tenantID string, p domain.Page) ([]json.RawMessage, string, error)
	CreateWebhookEndpoint(ctx context.Context, req domain.Request[domain.WebhookEndpoint], in domain.NewWebhookEndpoint) (domain.Response, error)
	GetWebhookEndpoint(ctx context.Context, tenantID, id string) (domain.WebhookEndpoint, error)
	ListWebhookEndpoints(ctx context.Context, tenantID string, p domain.Page) ([]domain.WebhookEndpoint, string, error)
	DeleteWebhookEndpoint(ctx context.Context, tenantID, id string) error
	UpdateWebhookEndpoint(ctx context.Context, req domain.Request[domain.WebhookEndpoint], id string, c domain.EndpointChange) (domain.Response, error)
	RotateWebhookSecret(ctx context.Context, req domain.Request[domain.WebhookEndpoint], id string, overlap time.Duration) (domain.Response, error)
	ListDeliveries(ctx context.Context, tenantID string, f domain.DeliveryFilter, p domain.Page) ([]domain.Delivery, string, error)
	RetryDelivery(ctx context.Context, req domain.Request[domain.Delivery], id string) (domain.Response, error)
	ReplayDead(ctx context.Context, req domain.Request[domain.Replay], endpointID string) (domain.Response, error)
	GetIdempotencyKey(ctx context.Context, tenantID, key string) (domain.IdempotencyKey, error)
	RecordFailure(ctx context.Context, f domain.FailedAttempt) error
}

// Config wires a Handler.
type Config struct {
	Store   Store
	Logger  zerolog.Logger
	Metrics *Metrics
	// Ready reports whether the service can take traffic: the database
	// answers and its schema is at the binary's version.
	Ready   func(ctx context.Context) error
	OpenAPI []byte // served at /openapi.yaml
	// WebhookAllowPrivate lets webhook URLs point to loopback and private
	// addresses (tests, local development).
	WebhookAllowPrivate bool
	// Resolver resolves webhook hosts (net.DefaultResolver when nil).
	Resolver netguard.Resolver
	// Admission bounds the requests under /v1 in flight and queued.
	Admission Admission
}

type server struct {
	store   Store
	metrics *Metrics
	ready   func(ctx context.Context) error
	openapi []byte

	allowPrivate bool
	resolver     netguard.Resolver
	admission    *admission
}

// NewHandler returns the whole API as one http.Handler.
func NewHandler(c Config) http.Handler {
	s := &server{store: c.Store, metrics: c.Metrics, ready: c.Ready, openapi: c.OpenAPI,
		allowPrivate: c.WebhookAllowPrivate, resolver: c.Resolver,
		admission: newAdmission(c.Admission, c.Metrics.reg)}
	if s.resolver == nil {
		s.resolver = net.DefaultResolver
	}
	return s.routes(c.Logger)
}
