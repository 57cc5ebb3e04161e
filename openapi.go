// Package safeflow is the root of the safeflow module. It embeds the API
// contract, openapi.yaml, which the binary serves at /openapi.yaml and the
// tests validate every response against.
package safeflow

import _ "embed"

// OpenAPI is the content of openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
