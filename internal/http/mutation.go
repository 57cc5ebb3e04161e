package http

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/safeflow/safeflow/internal/domain"
)

// mutation checks the Idempotency-Key and the body of a POST and builds the
// domain.Request that the store runs. Nothing here is stored: a failure is
// answered without claiming the key, so the client may retry with it.
func mutation[T validator](w http.ResponseWriter, r *http.Request, render func(any, error) (domain.Response, error)) (T, domain.Request, error) {
	var in T
	if err := domain.CheckIdempotencyKey(r.Header.Values("Idempotency-Key")); err != nil {
		return in, domain.Request{}, err
	}
	in, err := decode[T](w, r)
	if err != nil {
		return in, domain.Request{}, err
	}
	return in, domain.Request{
		TenantID:    tenantOf(r),
		Key:         r.Header.Get("Idempotency-Key"),
		Fingerprint: fingerprint(r, in),
		Render:      render,
	}, nil
}

// fingerprint identifies a request for idempotency: the method, the route
// pattern, the path parameters, the query and a canonical form of the body.
// The canonical body is the decoded request re-encoded, so key order,
// whitespace and number spelling do not matter, and the parts are
// length-prefixed so that no two requests can run together.
func fingerprint(r *http.Request, body any) []byte {
	h := sha256.New()
	write := func(s string) {
		h.Write([]byte(strconv.Itoa(len(s))))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	write("v1")
	write(r.Method)
	rc := chi.RouteContext(r.Context())
	write(rc.RoutePattern())
	params := make([]string, 0, len(rc.URLParams.Keys))
	for i, k := range rc.URLParams.Keys {
		params = append(params, k+"="+rc.URLParams.Values[i])
	}
	sort.Strings(params)
	for _, p := range params {
		write(p)
	}
	q, _ := url.ParseQuery(r.URL.RawQuery)
	write(q.Encode())                  // sorted by key
	canonical, _ := json.Marshal(body) // struct fields in declaration order, map keys sorted
	write(string(canonical))
	return h.Sum(nil)
}

// rendered answers a mutation: a created resource (with Location and, for
// versioned resources, ETag) or a stored domain refusal as a problem.
func rendered(r *http.Request, status int, location func(any) string) func(any, error) (domain.Response, error) {
	return func(v any, err error) (domain.Response, error) {
		if err != nil {
			var de *domain.Error
			if !errors.As(err, &de) {
				return domain.Response{}, err
			}
			p := problemFor(r, de)
			body, mErr := marshal(p)
			if mErr != nil {
				return domain.Response{}, mErr
			}
			return domain.Response{Status: p.Status, ContentType: "application/problem+json", Body: body}, nil
		}
		body, err := marshal(v)
		if err != nil {
			return domain.Response{}, err
		}
		return domain.Response{Status: status, ContentType: "application/json", Location: location(v),
			ETag: etagOf(v), Body: body}, nil
	}
}

// writeResponse sends a response produced by the safe flow, fresh or replayed.
func writeResponse(w http.ResponseWriter, resp domain.Response) {
	h := w.Header()
	h.Set("Content-Type", resp.ContentType)
	if resp.Location != "" {
		h.Set("Location", resp.Location)
	}
	if resp.ETag != "" {
		h.Set("ETag", resp.ETag)
	}
	h.Set("Idempotent-Replayed", strconv.FormatBool(resp.Replayed))
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

// etagOf returns the strong ETag of a versioned resource, or "".
func etagOf(v any) string {
	switch r := v.(type) {
	case domain.Account:
		return etag(r.Version)
	case domain.Payment:
		return etag(r.Version)
	}
	return ""
}

func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }
