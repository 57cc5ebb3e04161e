// Command loadgen drives safeflow's safe flow over HTTP at a fixed
// concurrency for a fixed time and prints throughput, latency percentiles and
// how many database sessions were waiting for a row lock (sampled from
// pg_stat_activity). It is used by `make bench`.
//
//	loadgen -url http://127.0.0.1:18090 -key sk_… -db postgres://… -scenario deposits-spread -c 16 -d 10s
//
// Scenarios:
//
//	deposits-spread  each worker deposits into its own account (all share one system account)
//	deposits-hot     every worker deposits into the same account (one hot row, for contrast)
//	withdrawals      each worker withdraws from its own funded account
//	replays          every request repeats one key: the replay path
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8080", "API base URL")
	key := flag.String("key", "", "API key")
	db := flag.String("db", "", "database URL, to sample lock waits (optional)")
	scenario := flag.String("scenario", "deposits-spread", "deposits-spread, deposits-hot, withdrawals or replays")
	conc := flag.Int("c", 16, "concurrent clients")
	dur := flag.Duration("d", 10*time.Second, "duration")
	flag.Parse()
	if err := run(*url, *key, *db, *scenario, *conc, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

type client struct {
	base, key string
	http      *http.Client
	seq       atomic.Int64
	run       string
}

func (c *client) post(path, key, body string) (int, []byte, error) {
	req, _ := http.NewRequest(http.MethodPost, c.base+path, bytes.NewBufferString(body))
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Content-Type", "application/json")
	if key == "" {
		key = fmt.Sprintf("lg-%s-%d", c.run, c.seq.Add(1))
	}
	req.Header.Set("Idempotency-Key", key)
	res, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

func (c *client) account(fund int64) (string, error) {
	st, b, err := c.post("/v1/accounts", "", `{"currency":"USD"}`)
	if err != nil || st != http.StatusCreated {
		return "", fmt.Errorf("create account: %d %s %v", st, b, err)
	}
	var a struct{ ID string }
	if err := json.Unmarshal(b, &a); err != nil {
		return "", err
	}
	if fund > 0 {
		if st, b, err := c.post("/v1/accounts/"+a.ID+"/deposits", "", fmt.Sprintf(`{"amount":%d}`, fund)); err != nil || st != http.StatusCreated {
			return "", fmt.Errorf("fund account: %d %s %v", st, b, err)
		}
	}
	return a.ID, nil
}

func run(base, key, dbURL, scenario string, conc int, dur time.Duration) error {
	c := &client{base: base, key: key, run: fmt.Sprint(time.Now().UnixNano()),
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc * 2}, Timeout: 30 * time.Second}}

	// Set up one request per worker: path, fixed key ("" = a new key each time), body.
	type op struct{ path, key, body string }
	ops := make([]op, conc)
	var hot string
	for i := range ops {
		switch scenario {
		case "deposits-spread", "withdrawals":
			var fund int64
			if scenario == "withdrawals" {
				fund = 1_000_000_000
			}
			id, err := c.account(fund)
			if err != nil {
				return err
			}
			kind := map[string]string{"deposits-spread": "deposits", "withdrawals": "withdrawals"}[scenario]
			ops[i] = op{"/v1/accounts/" + id + "/" + kind, "", `{"amount":1}`}
		case "deposits-hot", "replays":
			if hot == "" {
				id, err := c.account(0)
				if err != nil {
					return err
				}
				hot = id
			}
			ops[i] = op{"/v1/accounts/" + hot + "/deposits", "", `{"amount":1}`}
			if scenario == "replays" {
				ops[i].key = "lg-replay-" + c.run
			}
		default:
			return fmt.Errorf("unknown scenario %q", scenario)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	lockWaits := sampleLockWaits(ctx, dbURL)

	var (
		mu        sync.Mutex
		latencies []time.Duration
		failures  = map[string]int{}
		wg        sync.WaitGroup
	)
	start := time.Now()
	for i := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			for ctx.Err() == nil {
				t0 := time.Now()
				st, _, err := c.post(ops[i].path, ops[i].key, ops[i].body)
				d := time.Since(t0)
				mu.Lock()
				switch {
				case err != nil:
					failures["error"]++
				case st != http.StatusCreated:
					failures[fmt.Sprint(st)]++
				}
				mu.Unlock()
				local = append(local, d)
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[min(len(latencies)-1, int(float64(len(latencies))*p))]
	}
	waits := <-lockWaits
	fmt.Printf("%-16s c=%-3d requests=%-7d req/s=%-8.0f p50=%-8s p99=%-8s failures=%v row-lock-waiters(avg)=%s\n",
		scenario, conc, len(latencies), float64(len(latencies))/elapsed.Seconds(),
		pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), failures, waits)
	return nil
}

// sampleLockWaits counts, every 20 ms until ctx ends, the sessions of the
// database that wait for a row lock (another transaction's row or tuple
// lock), and sends their average.
func sampleLockWaits(ctx context.Context, dbURL string) <-chan string {
	out := make(chan string, 1)
	if dbURL == "" {
		out <- "n/a"
		return out
	}
	go func() {
		pool, err := pgxpool.New(context.Background(), dbURL)
		if err != nil {
			out <- "n/a"
			return
		}
		defer pool.Close()
		var sum, n int
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				out <- fmt.Sprintf("%.2f", float64(sum)/float64(max(n, 1)))
				return
			case <-t.C:
				var w int
				if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
					WHERE datname = current_database() AND wait_event_type = 'Lock'
					AND wait_event IN ('transactionid', 'tuple')`).Scan(&w); err == nil {
					sum += w
					n++
				}
			}
		}
	}()
	return out
}
