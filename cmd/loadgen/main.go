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
//	payments         each worker creates a payment between its own two accounts and confirms it
//	payments-merchant  as payments, but every worker pays the same payee (one hot row)
//
// For the payment scenarios every iteration is two requests (create, then
// confirm); req/s counts both, and payments/s is half of it.
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
	scenario := flag.String("scenario", "deposits-spread", "deposits-spread, deposits-hot, withdrawals, replays, payments or payments-merchant")
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

// outcome is one request's latency and, if it did not succeed, why.
type outcome struct {
	d       time.Duration
	failure string
}

func (c *client) timed(path, key, body string, want int) (outcome, []byte) {
	t0 := time.Now()
	st, b, err := c.post(path, key, body)
	o := outcome{d: time.Since(t0)}
	switch {
	case err != nil:
		o.failure = "error"
	case st != want:
		o.failure = fmt.Sprint(st)
	}
	return o, b
}

// single repeats one POST that creates something.
func (c *client) single(path, key, body string) func() []outcome {
	return func() []outcome {
		o, _ := c.timed(path, key, body, http.StatusCreated)
		return []outcome{o}
	}
}

// payment creates a payment of 1 from payer to payee and confirms it.
func (c *client) payment(payer, payee string) func() []outcome {
	body := fmt.Sprintf(`{"payer_account_id":%q,"payee_account_id":%q,"amount":1,"currency":"USD"}`, payer, payee)
	return func() []outcome {
		created, b := c.timed("/v1/payments", "", body, http.StatusCreated)
		if created.failure != "" {
			return []outcome{created}
		}
		var p struct{ ID string }
		if err := json.Unmarshal(b, &p); err != nil {
			created.failure = "bad body"
			return []outcome{created}
		}
		confirmed, _ := c.timed("/v1/payments/"+p.ID+"/confirm", "", "", http.StatusOK)
		return []outcome{created, confirmed}
	}
}

func run(base, key, dbURL, scenario string, conc int, dur time.Duration) error {
	c := &client{base: base, key: key, run: fmt.Sprint(time.Now().UnixNano()),
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc * 2}, Timeout: 30 * time.Second}}

	// Set up one iteration per worker: it sends one or more requests and
	// returns their outcomes.
	iters := make([]func() []outcome, conc)
	var hot string
	hotAccount := func() (string, error) {
		if hot == "" {
			id, err := c.account(0)
			if err != nil {
				return "", err
			}
			hot = id
		}
		return hot, nil
	}
	for i := range iters {
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
			iters[i] = c.single("/v1/accounts/"+id+"/"+kind, "", `{"amount":1}`)
		case "deposits-hot", "replays":
			id, err := hotAccount()
			if err != nil {
				return err
			}
			key := ""
			if scenario == "replays" {
				key = "lg-replay-" + c.run
			}
			iters[i] = c.single("/v1/accounts/"+id+"/deposits", key, `{"amount":1}`)
		case "payments", "payments-merchant":
			payer, err := c.account(1_000_000_000_000)
			if err != nil {
				return err
			}
			payee, err := c.account(0)
			if scenario == "payments-merchant" {
				payee, err = hotAccount()
			}
			if err != nil {
				return err
			}
			iters[i] = c.payment(payer, payee)
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
				outs := iters[i]()
				mu.Lock()
				for _, o := range outs {
					if o.failure != "" {
						failures[o.failure]++
					}
					local = append(local, o.d)
				}
				mu.Unlock()
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
	fmt.Printf("%-18s c=%-3d requests=%-7d req/s=%-8.0f p50=%-8s p99=%-8s failures=%v row-lock-waiters(avg)=%s\n",
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
