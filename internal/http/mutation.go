package http

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/safeflow/safeflow/internal/domain"
)

// mutating is the handler of every POST under /v1. It checks the
// Idempotency-Key and decodes the body strictly (a failure there is
// answered without touching the key, so the client may retry with it),
// builds the domain.Request that the store runs (answered with answer if the
// change is applied, with its problem if it is refused), and apply runs it
// through the store's safe flow. The answer, fresh or replayed, is sent as
// it was stored.
func mutating[In validator, T any](s *server, answer answer[T], apply func(r *http.Request, in In, req domain.Request[T]) (domain.Response, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := domain.CheckIdempotencyKey(r.Header.Values("Idempotency-Key")); err != nil {
			s.writeProblem(w, r, err)
			return
		}
		in, err := decode[In](w, r)
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		resp, err := apply(r, in, domain.Request[T]{
			Idempotency: domain.Idempotency{TenantID: tenantOf(r), Key: r.Header.Get("Idempotency-Key"), Fingerprint: fingerprint(r, in),
				Method: r.Method, Path: r.URL.EscapedPath()}, // escaped: ASCII, as sent
			Render: answer,
			Refuse: func(de *domain.Error) (domain.Response, error) { return refusal(r, de) },
		})
		if err != nil {
			s.writeProblem(w, r, err)
			return
		}
		writeResponse(w, resp)
	}
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

// answer is how a mutation answers a change that was applied, from its
// result. It runs inside the transaction (see domain.Request).
type answer[T any] func(result T) (domain.Response, error)

// jsonAnswer answers with the result as JSON under status, with the
// Location and the ETag that location and etag derive from it (nil: none).
func jsonAnswer[T any](status int, location, etag func(T) string) answer[T] {
	return func(v T) (domain.Response, error) {
		body, err := marshal(v)
		if err != nil {
			return domain.Response{}, err
		}
		resp := domain.Response{Status: status, ContentType: "application/json", Body: body}
		if location != nil {
			resp.Location = location(v)
		}
		if etag != nil {
			resp.ETag = etag(v)
		}
		return resp, nil
	}
}

// refusal is the stored answer to a refused request: its problem.
func refusal(r *http.Request, de *domain.Error) (domain.Response, error) {
	p := problemFor(r, de)
	body, err := marshal(p)
	if err != nil {
		return domain.Response{}, err
	}
	return domain.Response{Status: p.Status, ContentType: "application/problem+json", Body: body}, nil
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

// etag is the strong ETag of a resource at version.
func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }
