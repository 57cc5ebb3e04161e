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
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/safeflow/safeflow/internal/store"
)

// Cluster is a PostgreSQL cluster of the test's own: initdb in a temporary
// directory, pg_ctl on a free port of 127.0.0.1, as the postgres user when
// the test runs as root. It is stopped and removed when the test ends. For
// tests that need a cluster nothing else uses (an idle one, one they crash,
// a standby to promote); never the shared server.
type Cluster struct {
	t    testing.TB
	Dir  string // data directory
	Port int
	run  func(args ...string) error
	home string
	own  func(path string) // gives path to the user the cluster runs as
}

// Private starts a cluster, migrates its database postgres and returns a
// pool on it like New's.
func Private(t testing.TB) *pgxpool.Pool {
	t.Helper()
	c := StartCluster(t, nil)
	c.Migrate()
	return c.Pool(10)
}

// StartCluster initialises and starts a cluster with the extra settings of
// conf (postgresql.conf lines).
func StartCluster(t testing.TB, conf []string) *Cluster {
	t.Helper()
	c := newCluster(t)
	if err := c.run("initdb", "-D", c.Dir, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"); err != nil {
		t.Fatalf("testdb: initdb: %v", err)
	}
	c.configure(append([]string{"wal_level = replica", "max_wal_senders = 5", "fsync = off"}, conf...))
	c.start()
	return c
}

// StartStandby makes a streaming standby of primary (pg_basebackup -R) and
// starts it; name is its application_name, for synchronous_standby_names.
func StartStandby(t testing.TB, primary *Cluster, name string) *Cluster {
	t.Helper()
	c := newCluster(t)
	if err := os.Remove(c.Dir); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if err := c.run(c.binPath("pg_basebackup"), "-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port), "-U", "postgres", "-D", c.Dir, "-R",
		"-X", "stream", "--checkpoint=fast", "-d", fmt.Sprintf("host=127.0.0.1 port=%d user=postgres application_name=%s", primary.Port, name)); err != nil {
		t.Fatalf("testdb: pg_basebackup: %v", err)
	}
	c.start()
	return c
}

func newCluster(t testing.TB) *Cluster {
	t.Helper()
	bin, err := pgBin()
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	home, err := os.MkdirTemp("", "safeflow-pg-") // not t.TempDir: its parent is closed to the postgres user
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, home: home, Dir: filepath.Join(home, "data"), Port: freePort(t), own: func(string) {}}
	asPostgres := os.Geteuid() == 0
	if asPostgres {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("testdb: running as root needs a postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.own = func(path string) {
			if err := os.Chown(path, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		c.own(home)
	}
	c.run = func(args ...string) error {
		name := args[0]
		if !filepath.IsAbs(name) {
			name = filepath.Join(bin, name)
		}
		rest := args[1:]
		if asPostgres {
			rest = append([]string{"-u", "postgres", "--", name}, rest...)
			name = "runuser"
		}
		if out, err := exec.Command(name, rest...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s %v: %v\n%s", name, rest, err, out)
		}
		return nil
	}
	t.Cleanup(func() {
		_ = c.run("pg_ctl", "-D", c.Dir, "-m", "immediate", "-w", "stop")
		_ = os.RemoveAll(home)
	})
	return c
}

func (c *Cluster) binPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return name
}

// configure appends lines to postgresql.conf (the postgres user owns it).
func (c *Cluster) configure(lines []string) {
	c.t.Helper()
	f, err := os.OpenFile(filepath.Join(c.Dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("\n" + strings.Join(lines, "\n") + "\n"); err != nil {
		c.t.Fatal(err)
	}
}

func (c *Cluster) start() {
	c.t.Helper()
	if err := c.run("pg_ctl", "-D", c.Dir, "-l", filepath.Join(c.home, "log"), "-w", "-o",
		fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", c.Port, c.home), "start"); err != nil {
		c.t.Fatalf("testdb: start the cluster: %v", err)
	}
}

// Kill stops the cluster at once, as a crash would (pg_ctl stop -m immediate).
func (c *Cluster) Kill() error { return c.run("pg_ctl", "-D", c.Dir, "-m", "immediate", "-w", "stop") }

// Promote makes a standby the primary.
func (c *Cluster) Promote() error { return c.run("pg_ctl", "-D", c.Dir, "-w", "promote") }

// URL is the libpq URL of database postgres on the cluster.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.Port)
}

// Migrate applies the embedded migrations to database postgres.
func (c *Cluster) Migrate() {
	c.t.Helper()
	if err := migrate(context.Background(), c.URL()); err != nil {
		c.t.Fatalf("testdb: migrate: %v", err)
	}
}

// Pool is a pool on database postgres with safeflow's session settings.
func (c *Cluster) Pool(size int32) *pgxpool.Pool {
	c.t.Helper()
	return poolOn(c.t, c.URL(), size, false)
}

// PoolOn opens a pool with safeflow's session settings on url (any libpq
// URL, multi-host included), closed when the test ends.
func PoolOn(t testing.TB, url string, size int32) *pgxpool.Pool {
	t.Helper()
	return poolOn(t, url, size, false)
}

// poolOn opens a pool on url, closed when the test ends.
func poolOn(t testing.TB, url string, size int32, pooled bool) *pgxpool.Pool {
	t.Helper()
	pc, err := store.PoolConfig(url, size, pooled)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
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
