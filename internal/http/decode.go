package http

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"

	"github.com/safeflow/safeflow/internal/domain"
)

// maxBody is the largest request body accepted.
const maxBody = 1 << 20

// validator is a request body that checks its own format.
type validator interface {
	valid() []domain.FieldError
}

// decode reads a JSON body strictly into v: at most 1 MiB (413), a JSON media
// type when there is a body (415), no unknown fields, no field names in
// another letter case, no duplicate keys, no trailing data and no wrong
// types (400 invalid_request naming the field). An empty body decodes
// as {}, so missing fields are reported by validation.
func decode[T validator](w http.ResponseWriter, r *http.Request) (T, error) {
	var v T
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return v, &domain.Error{Kind: domain.KindTooLarge, Code: domain.CodePayloadTooLarge, Detail: "the request body is larger than 1 MiB"}
		}
		return v, &domain.Error{Kind: domain.KindInvalid, Code: domain.CodeInvalidRequest, Detail: "the request body could not be read"}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	} else if !isJSON(r.Header.Get("Content-Type")) {
		return v, &domain.Error{Kind: domain.KindUnsupportedMedia, Code: domain.CodeUnsupportedMediaType,
			Detail: "send the body as JSON with Content-Type: application/json"}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return v, domain.Invalid(domain.FieldError{Field: "body", Message: "must hold exactly one JSON object; found data after it"})
	}
	if fe := strictNames(body, reflect.TypeFor[T]()); fe != nil {
		return v, domain.Invalid(*fe)
	}
	if fe := v.valid(); len(fe) > 0 {
		return v, domain.Invalid(fe...)
	}
	return v, nil
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// jsonError explains a decoding failure without echoing internals.
func jsonError(err error) error { return domain.Invalid(jsonFieldError(err)) }

func jsonFieldError(err error) domain.FieldError {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return domain.FieldError{Field: "body", Message: fmt.Sprintf("malformed JSON at byte %d", se.Offset)}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return domain.FieldError{Field: "body", Message: "malformed JSON: unexpected end"}
	case errors.As(err, &te):
		if te.Field == "" {
			return domain.FieldError{Field: "body", Message: "must be a JSON object"}
		}
		return domain.FieldError{Field: te.Field, Message: "must be " + jsonType(te.Type.Kind().String(), te.Value)}
	case strings.HasPrefix(err.Error(), "json: unknown field "): // encoding/json has no typed error for it
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return domain.FieldError{Field: name, Message: "is not a known field"}
	}
	return domain.FieldError{Field: "body", Message: "is not valid JSON"}
}

func jsonType(kind, got string) string {
	switch kind {
	case "int64", "int", "int32":
		if got == "number" || strings.HasPrefix(got, "number ") {
			return "an integer within range (no fraction or exponent)"
		}
		return "an integer"
	case "string":
		return "a string"
	case "map":
		return "an object of string values"
	case "slice":
		return "an array"
	case "ptr":
		return "of the documented type"
	}
	return "of type " + kind
}
