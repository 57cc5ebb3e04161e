package http

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/safeflow/safeflow/internal/domain"
)

// MaxBatchItems bounds POST /v1/payments/batch.
const MaxBatchItems = 1000

type createPaymentRequest struct {
	PayerAccountID string            `json:"payer_account_id"`
	PayeeAccountID string            `json:"payee_account_id"`
	Amount         *int64            `json:"amount"`
	Currency       string            `json:"currency"`
	Description    *string           `json:"description,omitempty"`
	Metadata       map[string]string `json:"metadata,omitempty"`
}

func (in createPaymentRequest) valid() []domain.FieldError {
	var fe []domain.FieldError
	for _, f := range []struct{ name, value string }{{"payer_account_id", in.PayerAccountID}, {"payee_account_id", in.PayeeAccountID}} {
		if f.value == "" {
			fe = append(fe, domain.FieldError{Field: f.name, Message: "is required"})
		}
	}
	if in.Amount == nil {
		fe = append(fe, domain.FieldError{Field: "amount", Message: "is required"})
	} else if msg := domain.CheckAmount(*in.Amount); msg != "" {
		fe = append(fe, domain.FieldError{Field: "amount", Message: msg})
	}
	if msg := domain.CheckCurrency(in.Currency); msg != "" {
		fe = append(fe, domain.FieldError{Field: "currency", Message: msg})
	}
	if msg := domain.CheckText(in.Description, domain.MaxDescriptionLen); msg != "" {
		fe = append(fe, domain.FieldError{Field: "description", Message: msg})
	}
	return append(fe, domain.CheckMetadata("metadata", in.Metadata)...)
}

func (in createPaymentRequest) payment() domain.NewPayment {
	return domain.NewPayment{PayerAccountID: in.PayerAccountID, PayeeAccountID: in.PayeeAccountID, Amount: *in.Amount,
		Currency: in.Currency, Description: in.Description, Metadata: in.Metadata}
}

func paymentLocation(p domain.Payment) string { return "/v1/payments/" + p.ID }

func paymentETag(p domain.Payment) string { return etag(p.Version) }

func (s *server) handleCreatePayment() http.HandlerFunc {
	return mutating(s, jsonAnswer(http.StatusCreated, paymentLocation, paymentETag),
		func(r *http.Request, in createPaymentRequest, req domain.Request[domain.Payment]) (domain.Response, error) {
			return s.store.CreatePayment(r.Context(), req, in.payment())
		})
}

// emptyRequest is the body of an action: nothing, or {}.
type emptyRequest struct{}

func (emptyRequest) valid() []domain.FieldError { return nil }

// handleTransition runs one action of the payment state machine; it
// answers 200 with the payment, without a Location.
func (s *server) handleTransition(action string) http.HandlerFunc {
	return mutating(s, jsonAnswer(http.StatusOK, nil, paymentETag),
		func(r *http.Request, _ emptyRequest, req domain.Request[domain.Payment]) (domain.Response, error) {
			pre, err := precondition(r)
			if err != nil {
				return domain.Response{}, err
			}
			return s.store.TransitionPayment(r.Context(), req, chi.URLParam(r, "payment_id"), action, pre)
		})
}

// precondition parses If-Match: "*" or a list of entity tags. Our tags are
// strong and quoted versions ("3"); a weak tag or another tag never matches,
// as If-Match compares strongly (RFC 9110 §13.1.1).
func precondition(r *http.Request) (domain.Precondition, error) {
	values := r.Header.Values("If-Match")
	if len(values) == 0 {
		return domain.Precondition{}, nil
	}
	c := domain.Precondition{Versions: []int64{}}
	seen := false
	for _, v := range values {
		for _, tag := range strings.Split(v, ",") {
			tag = strings.TrimSpace(tag)
			opaque := strings.TrimPrefix(tag, "W/")
			switch {
			case tag == "":
				continue
			case tag == "*":
				c.Any = true
			case len(opaque) < 2 || opaque[0] != '"' || opaque[len(opaque)-1] != '"' || strings.Contains(opaque[1:len(opaque)-1], `"`):
				return c, domain.Invalid(domain.FieldError{Field: "If-Match",
					Message: `must be * or a list of entity tags as given by ETag, such as "3" (with the quotes)`})
			case opaque == tag: // strong
				if n, err := strconv.ParseInt(tag[1:len(tag)-1], 10, 64); err == nil {
					c.Versions = append(c.Versions, n)
				}
			}
			seen = true
		}
	}
	if !seen {
		return c, domain.Invalid(domain.FieldError{Field: "If-Match", Message: "is empty"})
	}
	return c, nil
}

func (s *server) handleGetPayment() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := s.store.GetPayment(r.Context(), tenantOf(r), chi.URLParam(r, "payment_id"))
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		w.Header().Set("ETag", paymentETag(p))
		writeJSON(w, http.StatusOK, p)
	}
}

func (s *server) handleListPayments() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, status, accountID, err := filteredPage(r, domain.PrefixPayment, domain.PaymentStatuses, "account_id", domain.PrefixAccount)
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		items, next, err := s.store.ListPayments(r.Context(), tenantOf(r), domain.PaymentFilter{Status: status, AccountID: accountID}, p)
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, newList(items, next))
	}
}

// batchRequest is POST /v1/payments/batch. Each item is decoded on its own,
// strictly, so that a malformed item is reported by its index.
type batchRequest struct {
	Items []batchItem `json:"items"`
}

type batchItem struct {
	createPaymentRequest
	decodeErr *domain.FieldError
}

func (it *batchItem) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&it.createPaymentRequest); err != nil {
		fe := jsonFieldError(err)
		it.decodeErr = &fe
		return nil
	}
	it.decodeErr = strictNames(b, reflect.TypeFor[createPaymentRequest]())
	return nil
}

// valid refuses the whole batch when any item is malformed: bad input never
// writes anything. Refusals of the domain are per item.
func (in batchRequest) valid() []domain.FieldError {
	if len(in.Items) == 0 || len(in.Items) > MaxBatchItems {
		return []domain.FieldError{{Field: "items", Message: fmt.Sprintf("must hold 1 to %d payments", MaxBatchItems)}}
	}
	var fe []domain.FieldError
	for i, it := range in.Items {
		prefix := "items[" + strconv.Itoa(i) + "]"
		errs := it.createPaymentRequest.valid()
		if it.decodeErr != nil {
			errs = []domain.FieldError{*it.decodeErr}
		}
		for _, e := range errs {
			if e.Field == "body" {
				e.Field = prefix
			} else {
				e.Field = prefix + "." + e.Field
			}
			fe = append(fe, e)
		}
	}
	return fe
}

// batchResult is one item of a batch response: the HTTP status the item
// would have had alone, and its body (the payment or the problem).
type batchResult struct {
	Index  int `json:"index"`
	Status int `json:"status"`
	Body   any `json:"body"`
}

type batchResponse struct {
	Data []batchResult `json:"data"`
}

// answerBatch answers 200 with each item's outcome as it would have
// answered alone; a refused item's problem names no request instance.
func answerBatch(items []domain.BatchItem) (domain.Response, error) {
	out := batchResponse{Data: make([]batchResult, len(items))}
	for i, it := range items {
		out.Data[i] = batchResult{Index: i, Status: http.StatusCreated, Body: it.Payment}
		if it.Refusal != nil {
			p := newProblem(it.Refusal)
			out.Data[i] = batchResult{Index: i, Status: p.Status, Body: p}
		}
	}
	return jsonAnswer[batchResponse](http.StatusOK, nil, nil)(out)
}

func (s *server) handleCreatePaymentBatch() http.HandlerFunc {
	return mutating(s, answerBatch, func(r *http.Request, in batchRequest, req domain.Request[[]domain.BatchItem]) (domain.Response, error) {
		items := make([]domain.NewPayment, len(in.Items))
		for i, it := range in.Items {
			items[i] = it.payment()
		}
		return s.store.CreatePayments(r.Context(), req, items)
	})
}
