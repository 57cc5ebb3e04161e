// Package testdb gives each test its own PostgreSQL database, cloned from a
// template that the embedded migrations were applied to once per test binary,
// checks the invariants of product.md §6 on it (CheckInvariants), and builds
// requests for tests that call the store directly (Request).
//
// The server is TEST_DATABASE_URL when set, otherwise a testcontainers
// PostgreSQL when Docker answers, otherwise the tests fail with a message
// that says how to provide one. They never skip.
package testdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"

	"github.com/safeflow/safeflow/internal/store"
)

var (
	adminURL string     // a database on the server to run CREATE/DROP DATABASE from
	template string     // the migrated template database
	createMu sync.Mutex // CREATE DATABASE … TEMPLATE is serialised per process
)

// Main prepares the server and the template, runs the tests and cleans up.
// Call it from TestMain: os.Exit(testdb.Main(m)).
func Main(m *testing.M) int {
	ctx := context.Background()
	stop, err := findServer(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testdb:", err)
		return 1
	}
	defer stop()
	template = "safeflow_tpl_" + randomHex(6)
	if err := createTemplate(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "testdb: prepare the template database:", err)
		return 1
	}
	defer dropDatabase(ctx, template)
	return m.Run()
}

func findServer(ctx context.Context) (stop func(), err error) {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		adminURL = u
		return func() {}, nil
	}
	ctr, err := tcpostgres.Run(ctx, "postgres:16-alpine", tcpostgres.BasicWaitStrategies())
	if err != nil {
		return nil, fmt.Errorf("no PostgreSQL to test against.\n"+
			"  TEST_DATABASE_URL is not set and testcontainers could not start one (%v).\n"+
			"  Set TEST_DATABASE_URL to a server where this user may CREATE DATABASE, e.g.\n"+
			"    TEST_DATABASE_URL='postgres://root@127.0.0.1:5432/postgres?sslmode=disable' make test\n"+
			"  (make test sets it when PostgreSQL answers on 127.0.0.1:5432), or start Docker", err)
	}
	adminURL, err = ctr.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		_ = testcontainers.TerminateContainer(ctr)
		return nil, err
	}
	return func() { _ = testcontainers.TerminateContainer(ctr) }, nil
}

func createTemplate(ctx context.Context) error {
	if err := admin(ctx, "CREATE DATABASE "+pgx.Identifier{template}.Sanitize()); err != nil {
		return err
	}
	return migrate(ctx, URL(template))
}

// migrate applies the embedded migrations to the database at url.
func migrate(ctx context.Context, url string) error {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	m, err := store.NewMigrator(pool)
	if err != nil {
		return err
	}
	defer m.Close()
	_, err = m.Up(ctx)
	return err
}

// New returns a pool on a new database holding the current schema; the
// database is dropped when the test ends. The pool has safeflow's session
// settings (lock and statement timeouts) and up to 10 connections.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return poolOn(t, URL(clone(t)), 10, false)
}

// clone creates a database from the migrated template and returns its name;
// it is dropped when the test ends.
func clone(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	name := "safeflow_test_" + randomHex(8)
	createMu.Lock()
	err := admin(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{template}.Sanitize())
	createMu.Unlock()
	if err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() { dropDatabase(ctx, name) })
	return name
}

// URL returns the libpq URL of database name on the test server.
func URL(name string) string {
	u, err := url.Parse(adminURL)
	if err != nil {
		panic("testdb: TEST_DATABASE_URL is not a URL: " + err.Error())
	}
	u.Path = "/" + name
	return u.String()
}

func admin(ctx context.Context, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

func dropDatabase(ctx context.Context, name string) {
	_ = admin(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
