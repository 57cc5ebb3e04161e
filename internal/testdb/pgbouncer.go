package testdb

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// PgBouncer is a PgBouncer of the test's own.
type PgBouncer struct {
	URL  string // database postgres through it
	stop func()
}

// Stop stops it: its clients lose their connections.
func (b *PgBouncer) Stop() { b.stop() }

// StartPgBouncer runs PgBouncer (as the postgres user when the test runs as
// root; it refuses root) in front of cluster c, pooling by transaction, on
// a free port of 127.0.0.1. It is stopped when the test ends. Install it
// with apt-get install pgbouncer (.ci/run does).
func StartPgBouncer(t testing.TB, c *Cluster) *PgBouncer {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/pgbouncer"); e == nil {
			bin = "/usr/sbin/pgbouncer"
		} else {
			t.Fatal("testdb: pgbouncer is not installed: apt-get install pgbouncer (.ci/run installs it)")
		}
	}
	port := freePort(t)
	dir := filepath.Join(c.home, "pgbouncer-"+strconv.Itoa(port))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c.own(dir)
	conf := filepath.Join(dir, "pgbouncer.ini")
	files := map[string]string{
		"users.txt": `"postgres" ""` + "\n",
		"pgbouncer.ini": strings.Join([]string{
			"[databases]",
			fmt.Sprintf("* = host=127.0.0.1 port=%d", c.Port),
			"[pgbouncer]",
			"listen_addr = 127.0.0.1",
			fmt.Sprintf("listen_port = %d", port),
			"unix_socket_dir =",
			"auth_type = trust",
			"auth_file = " + filepath.Join(dir, "users.txt"),
			"pool_mode = transaction",
			"max_client_conn = 500",
			"default_pool_size = 20",
			"pidfile = " + filepath.Join(dir, "pgbouncer.pid"),
			"logfile = " + filepath.Join(dir, "pgbouncer.log"),
			"admin_users = postgres",
		}, "\n") + "\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.run(bin, "-d", conf); err != nil {
		t.Fatalf("testdb: start pgbouncer: %v", err)
	}
	stop := func() {
		if b, err := os.ReadFile(filepath.Join(dir, "pgbouncer.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGINT) // immediate shutdown
			}
		}
	}
	t.Cleanup(stop)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Fatalf("testdb: pgbouncer did not listen:\n%s", log)
		}
	}
	return &PgBouncer{URL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port), stop: stop}
}

// PooledPool is a pool through the transaction pooler at url, configured
// as api serve configures one with DATABASE_POOL_MODE=transaction.
func PooledPool(t testing.TB, url string, size int32) *pgxpool.Pool {
	t.Helper()
	return poolOn(t, url, size, true)
}
