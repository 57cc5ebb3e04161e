package http

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/netguard"
)

type createEndpointRequest struct {
	URL        string   `json:"url"`
	EventTypes []string `json:"event_types,omitempty"`
}

func (in createEndpointRequest) valid() []domain.FieldError {
	var fe []domain.FieldError
	if msg := domain.CheckWebhookURL(in.URL); msg != "" {
		fe = append(fe, domain.FieldError{Field: "url", Message: msg})
	}
	return append(fe, domain.CheckEventTypes("event_types", in.EventTypes)...)
}

// checkDestination refuses a URL that is or resolves to a loopback,
// private, link-local or multicast address, unless private ones are allowed.
// The relay checks every connection again.
func (s *server) checkDestination(ctx context.Context, raw string) error {
	if s.allowPrivate {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := netguard.CheckURL(ctx, s.resolver, raw)
	if errors.Is(err, netguard.ErrNotPublic) {
		return domain.Invalid(domain.FieldError{Field: "url",
			Message: "must not point to a loopback, private, link-local or multicast address (" + err.Error() + ")"})
	}
	return err
}

func endpointLocation(e domain.WebhookEndpoint) string { return "/v1/webhook-endpoints/" + e.ID }

func (s *server) handleCreateEndpoint() http.HandlerFunc {
	return mutating(s, jsonAnswer(http.StatusCreated, endpointLocation, nil),
		func(r *http.Request, in createEndpointRequest, req domain.Request[domain.WebhookEndpoint]) (domain.Response, error) {
			if err := s.checkDestination(r.Context(), in.URL); err != nil {
				return domain.Response{}, err
			}
			return s.store.CreateWebhookEndpoint(r.Context(), req, domain.NewWebhookEndpoint{URL: in.URL, EventTypes: in.EventTypes})
		})
}

func (s *server) handleGetEndpoint() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		e, err := s.store.GetWebhookEndpoint(r.Context(), tenantOf(r), chi.URLParam(r, "endpoint_id"))
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, e)
	}
}

func (s *server) handleListEndpoints() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := page(r, domain.PrefixEndpoint)
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		items, next, err := s.store.ListWebhookEndpoints(r.Context(), tenantOf(r), p)
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, newList(items, next))
	}
}

// patchEndpointRequest changes what it names of an endpoint.
type patchEndpointRequest struct {
	URL        *string   `json:"url,omitempty"`
	EventTypes *[]string `json:"event_types,omitempty"`
	Status     *string   `json:"status,omitempty"`
}

func (in patchEndpointRequest) valid() []domain.FieldError {
	var fe []domain.FieldError
	if in.URL != nil {
		if msg := domain.CheckWebhookURL(*in.URL); msg != "" {
			fe = append(fe, domain.FieldError{Field: "url", Message: msg})
		}
	}
	if in.EventTypes != nil {
		fe = append(fe, domain.CheckEventTypes("event_types", *in.EventTypes)...)
	}
	if in.Status != nil && *in.Status != domain.EndpointEnabled && *in.Status != domain.EndpointDisabled {
		fe = append(fe, domain.FieldError{Field: "status", Message: "must be enabled or disabled"})
	}
	return fe
}

// handlePatchEndpoint changes an endpoint's url, event types or status
// through the safe flow (an Idempotency-Key is required) and answers 200
// with the endpoint, without its secret.
func (s *server) handlePatchEndpoint() http.HandlerFunc {
	return mutating(s, jsonAnswer[domain.WebhookEndpoint](http.StatusOK, nil, nil),
		func(r *http.Request, in patchEndpointRequest, req domain.Request[domain.WebhookEndpoint]) (domain.Response, error) {
			if in.URL != nil {
				if err := s.checkDestination(r.Context(), *in.URL); err != nil {
					return domain.Response{}, err
				}
			}
			return s.store.UpdateWebhookEndpoint(r.Context(), req, chi.URLParam(r, "endpoint_id"),
				domain.EndpointChange{URL: in.URL, EventTypes: in.EventTypes, Status: in.Status})
		})
}

// rotateSecretRequest says how long the previous secret keeps signing.
type rotateSecretRequest struct {
	ExpirePreviousAfterSeconds *int64 `json:"expire_previous_after_seconds,omitempty"`
}

func (in rotateSecretRequest) valid() []domain.FieldError {
	if v := in.ExpirePreviousAfterSeconds; v != nil && (*v < 0 || *v > int64(domain.MaxSecretOverlap/time.Second)) {
		return []domain.FieldError{{Field: "expire_previous_after_seconds", Message: "must be between 0 and 604800 (7 days)"}}
	}
	return nil
}

// handleRotateSecret gives an endpoint a new secret, shown in the 200 (and
// in its replays); the previous one keeps signing beside it until it
// expires (24 h unless expire_previous_after_seconds says otherwise).
func (s *server) handleRotateSecret() http.HandlerFunc {
	return mutating(s, jsonAnswer[domain.WebhookEndpoint](http.StatusOK, nil, nil),
		func(r *http.Request, in rotateSecretRequest, req domain.Request[domain.WebhookEndpoint]) (domain.Response, error) {
			overlap := domain.DefaultSecretOverlap
			if in.ExpirePreviousAfterSeconds != nil {
				overlap = time.Duration(*in.ExpirePreviousAfterSeconds) * time.Second
			}
			return s.store.RotateWebhookSecret(r.Context(), req, chi.URLParam(r, "endpoint_id"), overlap)
		})
}

// handleDeleteEndpoint answers 204, then 404 for an endpoint already gone.
// DELETE needs no Idempotency-Key: doing it twice has the effect of once.
func (s *server) handleDeleteEndpoint() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.store.DeleteWebhookEndpoint(r.Context(), tenantOf(r), chi.URLParam(r, "endpoint_id")); err != nil {
			s.writeProblem(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// handleAction runs a bodiless POST (empty body or {}) on the resource
// named by the path parameter param, answering 200 with what run returns.
func handleAction[T any](s *server, param string, run func(ctx context.Context, req domain.Request[T], id string) (domain.Response, error)) http.HandlerFunc {
	return mutating(s, jsonAnswer[T](http.StatusOK, nil, nil),
		func(r *http.Request, _ emptyRequest, req domain.Request[T]) (domain.Response, error) {
			return run(r.Context(), req, chi.URLParam(r, param))
		})
}

func (s *server) handleListDeliveries() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, status, endpointID, err := filteredPage(r, domain.PrefixDelivery, domain.DeliveryStatuses, "endpoint_id", domain.PrefixEndpoint)
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		items, next, err := s.store.ListDeliveries(r.Context(), tenantOf(r), domain.DeliveryFilter{Status: status, EndpointID: endpointID}, p)
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, newList(items, next))
	}
}
