package http_test

import (
	"context"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/safeflow/safeflow"
)

// Every operation's JSON request body and 2xx JSON answer carries an
// example (the schema's, taken from a real run of the walk-through), so
// that Postman, Portman and Prism send and show real shapes, not lorem
// ipsum. The loader validates each example against its schema.
func TestEveryOperationHasExamples(t *testing.T) {
	t.Parallel()
	doc, err := openapi3.NewLoader().LoadFromData(safeflow.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background(), openapi3.EnableExamplesValidation()); err != nil {
		t.Fatalf("openapi.yaml with its examples: %v", err)
	}
	has := func(mt *openapi3.MediaType) bool {
		return mt.Example != nil || len(mt.Examples) > 0 || mt.Schema != nil && mt.Schema.Value != nil && mt.Schema.Value.Example != nil
	}
	n := 0
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			name := method + " " + path
			if rb := op.RequestBody; rb != nil && rb.Value != nil {
				if mt := rb.Value.Content.Get("application/json"); mt != nil && !has(mt) {
					t.Errorf("%s: the request body has no example", name)
				}
			}
			for code, r := range op.Responses.Map() {
				if !strings.HasPrefix(code, "2") || r.Value == nil {
					continue
				}
				if mt := r.Value.Content.Get("application/json"); mt != nil {
					n++
					if !has(mt) {
						t.Errorf("%s: the %s answer has no example", name, code)
					}
				}
			}
		}
	}
	if n < 25 {
		t.Errorf("only %d JSON answers found", n)
	}
}
