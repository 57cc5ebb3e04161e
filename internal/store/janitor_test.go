package store_test

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/safeflow/safeflow/internal/domain"
	"github.com/safeflow/safeflow/internal/store"
	"github.com/safeflow/safeflow/internal/testdb"
)

func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

func TestExpiredKeysAreFreedAndPurged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	c := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	st := store.New(pool, store.Options{IdempotencyTTL: time.Hour, Now: c.Now, JanitorBatch: 2})
	secret, err := st.CreateAPIKey(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	tenant, err := st.Authenticate(ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	create := func(key, fp string) domain.Response {
		t.Helper()
		resp, err := st.CreateAccount(ctx, testdb.Request(tenant, key, fp, accountID), domain.NewAccount{Currency: "USD"})
		if err != nil {
			t.Fatalf("create account under %s: %v", key, err)
		}
		return resp
	}
	var keysLeft = func() int {
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM idempotency_keys").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	first := create("k", "fp")
	c.Add(59 * time.Minute)
	if r := create("k", "fp"); !r.Replayed || string(r.Body) != string(first.Body) {
		t.Fatalf("within the TTL: %+v, want the replay of %s", r, first.Body)
	}

	// Past the TTL the key is free again, even before the janitor ran.
	c.Add(2 * time.Minute)
	if r := create("k", "another request"); r.Replayed {
		t.Fatalf("past the TTL the key was still replayed: %s", r.Body)
	}

	// A deposit under an expired key: the key is released and claimed again
	// in a second round trip, and the account's locking read, guarded by
	// the claim, must travel again with it.
	var acct domain.Account
	if err := json.Unmarshal(first.Body, &acct); err != nil {
		t.Fatal(err)
	}
	deposit := func(amount int64) domain.Response {
		t.Helper()
		resp, err := st.Move(ctx, testdb.Request(tenant, "d", strconv.FormatInt(amount, 10), movementID),
			domain.NewMovement{Kind: domain.KindDeposit, AccountID: acct.ID, Amount: amount})
		if err != nil || resp.Status != 201 || resp.Replayed {
			t.Fatalf("deposit of %d under d: %d %s (replayed %v), %v; want a fresh 201", amount, resp.Status, resp.Body, resp.Replayed, err)
		}
		return resp
	}
	deposit(3)
	c.Add(61 * time.Minute)
	deposit(4)
	var available int64
	if err := pool.QueryRow(ctx, "SELECT available FROM accounts WHERE id = $1", acct.ID).Scan(&available); err != nil || available != 7 {
		t.Fatalf("balance after a deposit under a key and another under it once expired: %d, %v; want 7", available, err)
	}

	// The janitor deletes expired records in batches and leaves live ones.
	for i := range 5 {
		create("old-"+string(rune('a'+i)), "fp")
	}
	c.Add(2 * time.Hour)
	create("fresh", "fp")
	n, err := st.PurgeExpiredKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 7 { // the five old keys, the re-claimed "k" and "d"
		t.Errorf("purged %d, want 7", n)
	}
	if left := keysLeft(); left != 1 {
		t.Errorf("%d keys left, want 1 (fresh)", left)
	}
	if r := create("fresh", "fp"); !r.Replayed {
		t.Error("a live key was purged")
	}
	testdb.CheckInvariants(t, pool, testdb.KeysPurged)
}
