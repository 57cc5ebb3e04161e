package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/safeflow/safeflow/internal/store"
)

// openPool connects to the database with the safe flow's session settings,
// up to size connections (unless the URL says pool_max_conns), through a
// transaction pooler when pooled. With create, a missing database is
// created first.
func openPool(ctx context.Context, url string, size int32, pooled, create bool) (*pgxpool.Pool, error) {
	pc, err := store.PoolConfig(url, size, pooled)
	if err != nil {
		return nil, usageError("config: DATABASE_URL: " + err.Error())
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, err
	}
	err = pool.Ping(ctx)
	var pg *pgconn.PgError
	if create && errors.As(err, &pg) && pg.Code == "3D000" {
		pool.Close()
		if err := createDatabase(ctx, pc.ConnConfig); err != nil {
			return nil, err
		}
		return openPool(ctx, url, size, pooled, false)
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	return pool, nil
}

// createDatabase creates cc's database, connecting to "postgres" to do so.
func createDatabase(ctx context.Context, cc *pgx.ConnConfig) error {
	admin := cc.Copy()
	name := admin.Database
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("create database %q: %w", name, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		var pg *pgconn.PgError
		if !errors.As(err, &pg) || pg.Code != "42P04" { // created meanwhile by someone else
			return fmt.Errorf("create database %q: %w", name, err)
		}
	}
	return nil
}
