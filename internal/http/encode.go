package http

import (
	"bytes"
	"encoding/json"
)

// marshal encodes v as one line of JSON without HTML escaping, so details
// such as "Bearer <key>" read as written.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
