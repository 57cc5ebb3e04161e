package testdb

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/safeflow/safeflow/internal/store"
)

// Private starts a PostgreSQL cluster of the test's own (initdb in a
// temporary directory, pg_ctl on a free port of 127.0.0.1, as the postgres
// user when the test runs as root), migrates its database and returns a
// pool on it like New's. The cluster is stopped and removed when the test
// ends. For tests that need a cluster nothing else uses: an idle one, or one
// they crash; never the shared server.
func Private(t testing.TB) *pgxpool.Pool {
	t.Helper()
	bin, err := pgBin()
	if err != nil {
		t.Fatalf("testdb.Private: %v", err)
	}
	dir, err := os.MkdirTemp("", "safeflow-pg-") // not t.TempDir: its parent is closed to the postgres user
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	asPostgres := os.Geteuid() == 0
	if asPostgres {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("testdb.Private: running as root needs a postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) {
		t.Helper()
		name := filepath.Join(bin, args[0])
		args = args[1:]
		if asPostgres {
			args = append([]string{"-u", "postgres", "--", name}, args...)
			name = "runuser"
		}
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("testdb.Private: %s %v: %v\n%s", name, args, err, out)
		}
	}
	port := freePort(t)
	run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
	run("pg_ctl", "-D", data, "-l", filepath.Join(dir, "log"), "-w", "-o",
		fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", port, dir), "start")
	t.Cleanup(func() { run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop") })

	ctx := context.Background()
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	if err := migrate(ctx, url); err != nil {
		t.Fatalf("testdb.Private: migrate: %v", err)
	}
	pc, err := store.PoolConfig(url, 10)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// pgBin finds the newest PostgreSQL server binaries installed.
func pgBin() (string, error) {
	if b := os.Getenv("PG_BIN"); b != "" {
		return b, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi < vj
	})
	if len(dirs) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
		return "", fmt.Errorf("no initdb: install the PostgreSQL server (apt-get install postgresql) or set PG_BIN")
	}
	return dirs[len(dirs)-1], nil
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
