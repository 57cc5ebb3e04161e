package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/safeflow/safeflow/migrations"
)

// Migrator runs the embedded goose migrations on pool's database. Close it
// when done.
type Migrator struct {
	*goose.Provider
	db *sql.DB
}

// NewMigrator returns a Migrator for pool.
func NewMigrator(pool *pgxpool.Pool) (*Migrator, error) {
	db := stdlib.OpenDBFromPool(pool)
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: load migrations: %w", err)
	}
	return &Migrator{Provider: p, db: db}, nil
}

// Close releases the migrator's handle (not the pool).
func (m *Migrator) Close() error { return m.db.Close() }

// CheckVersion returns an error unless the schema is at the version the
// binary's embedded migrations reach.
func (m *Migrator) CheckVersion(ctx context.Context) error {
	cur, target, err := m.GetVersions(ctx)
	if err != nil {
		return fmt.Errorf("store: read schema version: %w", err)
	}
	if cur != target {
		return fmt.Errorf("store: schema is at version %d, this binary needs %d (run `api migrate up`)", cur, target)
	}
	return nil
}
