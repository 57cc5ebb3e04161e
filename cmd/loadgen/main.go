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
//	relay            deposits-spread at -rate requests/s with a webhook endpoint on a local
//	                 receiver: deliveries/s and commit → delivery latency (the API's relay)
//	overload         deposits at -rate requests/s, open loop (see overload.go): successes, fast
//	                 503s, slow answers, the API's peak goroutines and memory, recovery
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
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
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
	rate := flag.Int("rate", 0, "requests per second across all clients (0: as fast as they go)")
	flag.Parse()
	if err := run(*url, *key, *db, *scenario, *conc, *dur, *rate); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	// The generator's own CPU (user + system seconds), for make bench's split.
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		fmt.Printf("loadgen-cpu=%.2f\n", float64(ru.Utime.Nano()+ru.Stime.Nano())/1e9)
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

func run(base, key, dbURL, scenario string, conc int, dur time.Duration, rate int) error {
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
	if scenario == "overload" {
		return overload(c, dbURL, conc, dur, rate)
	}
	var sink *receiver
	if scenario == "relay" {
		var err error
		if sink, err = c.subscribe(); err != nil {
			return err
		}
		defer sink.close(c)
	}
	for i := range iters {
		switch scenario {
		case "deposits-spread", "withdrawals", "relay":
			var fund int64
			if scenario == "withdrawals" {
				fund = 1_000_000_000
			}
			id, err := c.account(fund)
			if err != nil {
				return err
			}
			kind := map[string]string{"deposits-spread": "deposits", "withdrawals": "withdrawals", "relay": "deposits"}[scenario]
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

	if sink != nil {
		sink.reset() // the accounts' own events are not part of the figure
	}
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	lockWaits := sampleLockWaits(ctx, dbURL)
	pace := func() {}
	if rate > 0 {
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		pace = func() {
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
		}
	}

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
			for pace(); ctx.Err() == nil; pace() {
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
	if sink != nil {
		ok := len(latencies)
		for _, n := range failures {
			ok -= n
		}
		sink.report(ok, start, conc, rate)
		return nil
	}
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

// receiver is a local webhook endpoint that notes when each event arrives.
type receiver struct {
	srv        *http.Server
	endpointID string
	mu         sync.Mutex
	seen       map[string]bool
	latencies  []time.Duration // event created_at → received
	last       time.Time
}

// subscribe starts a receiver and points a webhook endpoint at it.
func (c *client) subscribe() (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &receiver{seen: map[string]bool{}}
	r.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var env struct {
			CreatedAt time.Time `json:"created_at"`
		}
		body, _ := io.ReadAll(req.Body)
		_ = json.Unmarshal(body, &env)
		now := time.Now()
		r.mu.Lock()
		if id := req.Header.Get("webhook-id"); !r.seen[id] {
			r.seen[id] = true
			r.latencies = append(r.latencies, now.Sub(env.CreatedAt))
			r.last = now
		}
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = r.srv.Serve(ln) }()
	st, b, err := c.post("/v1/webhook-endpoints", "", fmt.Sprintf(`{"url":"http://%s/hook"}`, ln.Addr()))
	if err != nil || st != http.StatusCreated {
		return nil, fmt.Errorf("create webhook endpoint (is the API running with WEBHOOK_ALLOW_PRIVATE=true?): %d %s %v", st, b, err)
	}
	var e struct{ ID string }
	_ = json.Unmarshal(b, &e)
	r.endpointID = e.ID
	return r, nil
}

func (r *receiver) reset() {
	time.Sleep(2 * time.Second) // let the setup's events arrive
	r.mu.Lock()
	r.latencies, r.last = nil, time.Time{}
	r.mu.Unlock()
}

// report waits up to 30 s for the events of the run to arrive, then prints
// deliveries/s and latency percentiles.
func (r *receiver) report(events int, start time.Time, conc, rate int) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.latencies)
		r.mu.Unlock()
		if n >= events || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ls := slices.Clone(r.latencies)
	slices.Sort(ls)
	pct := func(p float64) time.Duration {
		if len(ls) == 0 {
			return 0
		}
		return ls[min(len(ls)-1, int(float64(len(ls))*p))].Round(100 * time.Microsecond)
	}
	span := r.last.Sub(start).Seconds()
	fmt.Printf("%-18s c=%-3d rate=%-5d events=%-7d delivered=%-7d deliveries/s=%-7.0f commit→delivery p50=%-8s p99=%-8s max=%s\n",
		"relay", conc, rate, events, len(ls), float64(len(ls))/span, pct(0.5), pct(0.99), pct(1))
}

func (r *receiver) close(c *client) {
	req, _ := http.NewRequest(http.MethodDelete, c.base+"/v1/webhook-endpoints/"+r.endpointID, nil)
	req.Header.Set("Authorization", "Bearer "+c.key)
	if res, err := c.http.Do(req); err == nil {
		res.Body.Close()
	}
	_ = r.srv.Close()
}
