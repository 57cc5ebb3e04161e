package http

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/hlog"

	"github.com/safeflow/safeflow/internal/domain"
)

// routes lists the whole API.
func (s *server) routes(log zerolog.Logger) http.Handler {
	r := chi.NewRouter()
	r.Use(hlog.NewHandler(log), requestID, accessLog, s.recoverer, s.instrument)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		s.writeProblem(w, r, &domain.Error{Kind: domain.KindNotFound, Code: domain.CodeNotFound, Detail: "no such route: " + r.URL.Path})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		s.writeProblem(w, r, &domain.Error{Kind: domain.KindMethodNotAllowed, Code: domain.CodeMethodNotAllowed,
			Detail: r.Method + " is not allowed on " + r.URL.Path})
	})

	r.Get("/healthz", s.handleHealthz())
	r.Get("/readyz", s.handleReadyz())
	r.Get("/metrics", s.metrics.handler().ServeHTTP)
	r.Get("/openapi.yaml", s.handleOpenAPI())

	r.Route("/v1", func(r chi.Router) {
		r.Use(s.admit, s.authenticate)
		r.Post("/accounts", s.handleCreateAccount())
		r.Get("/accounts", s.handleListAccounts())
		r.Get("/accounts/{account_id}", s.handleGetAccount())
		r.Get("/accounts/{account_id}/entries", s.handleListEntries())
		r.Post("/accounts/{account_id}/deposits", s.handleMove(domain.KindDeposit))
		r.Post("/accounts/{account_id}/withdrawals", s.handleMove(domain.KindWithdrawal))
		r.Get("/deposits/{id}", s.handleGetMovement(domain.KindDeposit))
		r.Get("/withdrawals/{id}", s.handleGetMovement(domain.KindWithdrawal))
		r.Get("/events", s.handleListEvents())
		r.Post("/payments", s.handleCreatePayment())
		r.Get("/payments", s.handleListPayments())
		r.Post("/payments/batch", s.handleCreatePaymentBatch())
		r.Get("/payments/{payment_id}", s.handleGetPayment())
		r.Post("/webhook-endpoints", s.handleCreateEndpoint())
		r.Get("/webhook-endpoints", s.handleListEndpoints())
		r.Get("/webhook-endpoints/{endpoint_id}", s.handleGetEndpoint())
		r.Delete("/webhook-endpoints/{endpoint_id}", s.handleDeleteEndpoint())
		r.Patch("/webhook-endpoints/{endpoint_id}", s.handlePatchEndpoint())
		r.Post("/webhook-endpoints/{endpoint_id}/rotate-secret", s.handleRotateSecret())
		r.Post("/webhook-endpoints/{endpoint_id}/replay-dead", handleAction(s, "endpoint_id", s.store.ReplayDead))
		r.Get("/webhook-deliveries", s.handleListDeliveries())
		r.Get("/idempotency-keys/{key}", s.handleGetIdempotencyKey())
		r.Post("/webhook-deliveries/{delivery_id}/retry", handleAction(s, "delivery_id", s.store.RetryDelivery))
		for _, action := range []string{domain.ActionConfirm, domain.ActionSettle, domain.ActionCancel, domain.ActionRefund} {
			r.Post("/payments/{payment_id}/"+action, s.handleTransition(action))
		}
	})
	return r
}
