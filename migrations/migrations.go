// Package migrations embeds the goose SQL migrations, the only DDL of safeflow.
package migrations

import "embed"

// FS holds every migration file; goose reads them from its root.
//
//go:embed *.sql
var FS embed.FS
