package store

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/safeflow/safeflow/internal/domain"
)

// findOne reads the tenant's resource id with query ($1 tenant, $2 id) into
// its row type R. An id that cannot have the resource's prefix, and a row
// that is not there (or not the tenant's), are both NotFound.
func findOne[R any](ctx context.Context, q querier, query, resource, prefix, tenantID, id string) (R, error) {
	var r R
	if !domain.ValidID(prefix, id) { // no such id can exist; it may not even be UTF-8
		return r, domain.NotFound(resource, id)
	}
	rows, _ := q.Query(ctx, query, tenantID, id)
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[R])
	if errors.Is(err, pgx.ErrNoRows) {
		return r, domain.NotFound(resource, id)
	}
	return r, err
}
