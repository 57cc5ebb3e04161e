package http

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/safeflow/safeflow/internal/domain"
)

// encoding/json matches object keys to struct fields case-insensitively and
// keeps the last of duplicate keys, so {"AMOUNT":5} is read as amount and
// {"amount":5,"amount":6} as 6. strictNames walks the body beside the type
// it decodes into and refuses both (product.md §1): a client must never
// have a request applied other than as it reads.

var unmarshaler = reflect.TypeFor[json.Unmarshaler]()

// strictNames checks the already well-formed JSON body against type t:
// every key of an object decoded into a struct names one of its fields
// exactly, and no object repeats a key. A type with its own UnmarshalJSON
// is left to check itself.
func strictNames(body []byte, t reflect.Type) *domain.FieldError {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	fe, err := walkValue(dec, t, "")
	if err != nil {
		return &domain.FieldError{Field: "body", Message: "is not valid JSON"}
	}
	return fe
}

func walkValue(dec *json.Decoder, t reflect.Type, path string) (*domain.FieldError, error) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && (reflect.PointerTo(t).Implements(unmarshaler) || t.Implements(unmarshaler)) {
		t = nil // checks its own keys; still no duplicates below
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		return walkObject(dec, t, path)
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if fe, err := walkValue(dec, elem, path+"["+strconv.Itoa(i)+"]"); fe != nil || err != nil {
				return fe, err
			}
		}
		_, err := dec.Token() // ]
		return nil, err
	}
	return nil, nil
}

func walkObject(dec *json.Decoder, t reflect.Type, path string) (*domain.FieldError, error) {
	var fields map[string]reflect.Type
	var elem reflect.Type
	switch {
	case t != nil && t.Kind() == reflect.Struct:
		fields = jsonFields(t)
	case t != nil && t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		name := key
		if path != "" {
			name = path + "." + key
		}
		if seen[key] {
			return &domain.FieldError{Field: name, Message: "appears more than once; send each field once"}, nil
		}
		seen[key] = true
		next := elem
		if fields != nil {
			ft, ok := fields[key]
			if !ok {
				return &domain.FieldError{Field: name, Message: unknownField(fields, key)}, nil
			}
			next = ft
		}
		if fe, err := walkValue(dec, next, name); fe != nil || err != nil {
			return fe, err
		}
	}
	_, err := dec.Token() // }
	return nil, err
}

// unknownField explains a key that names no field, pointing out a field
// the key matches but for letter case.
func unknownField(fields map[string]reflect.Type, key string) string {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return fmt.Sprintf("is not a known field; field names are case-sensitive: did you mean %q?", name)
		}
	}
	return "is not a known field"
}

// jsonFields maps the JSON names of struct t's fields, embedded structs'
// included, to their types, as encoding/json names them.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := make(map[string]reflect.Type)
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for n, ft := range jsonFields(f.Type) {
				out[n] = ft
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}
