package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// overload is an open-loop load: rate deposits a second (spread over conc
// accounts) for dur, each sent on time whether or not earlier ones were
// answered, as independent clients do. It reports the share of successes,
// of 503s answered within a second and of slower answers (or none, within
// the client's 10 s), the latency of each, the API's peak goroutines and
// resident memory (sampled from its /metrics), how many deposits were
// committed against how many clients were told of, and how long after the
// load the API answers a request in under 100 ms again.
func overload(c *client, dbURL string, conc int, dur time.Duration, rate int) error {
	if rate <= 0 {
		return fmt.Errorf("overload needs -rate")
	}
	c.http.Timeout = 10 * time.Second
	c.http.Transport = &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 0}
	paths := make([]string, conc)
	for i := range paths {
		id, err := c.account(0)
		if err != nil {
			return err
		}
		paths[i] = "/v1/accounts/" + id + "/deposits"
	}
	committed := countDeposits(dbURL)
	before := committed()

	ctx, cancel := context.WithCancel(context.Background())
	peaks := samplePeaks(ctx, c.base+"/metrics")
	type result struct {
		d      time.Duration
		status int
	}
	var (
		mu      sync.Mutex
		results []result
		wg      sync.WaitGroup
		inFly   atomic.Int64
		dropped atomic.Int64
	)
	// Every 10 ms, the requests due since the last tick: a ticker per
	// request cannot keep up with thousands a second on a small machine.
	tick := time.NewTicker(10 * time.Millisecond)
	end := time.After(dur)
	began, sent := time.Now(), 0
	for {
		select {
		case <-tick.C:
		case <-end:
			tick.Stop()
			goto wait
		}
		due := int(time.Since(began).Seconds()*float64(rate)) - sent
		for range due {
			i := sent
			sent++
			if inFly.Load() > 20000 { // protect the load generator itself
				dropped.Add(1)
				continue
			}
			inFly.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer inFly.Add(-1)
				t0 := time.Now()
				st, _, err := c.post(paths[i%len(paths)], "", `{"amount":1}`)
				if err != nil {
					st = 0
				}
				mu.Lock()
				results = append(results, result{time.Since(t0), st})
				mu.Unlock()
			}()
		}
	}
wait:
	loadEnd := time.Now()
	wg.Wait()
	recovered := time.Duration(-1)
	for time.Since(loadEnd) < 30*time.Second {
		t0 := time.Now()
		st, _, err := c.post(paths[0], "", `{"amount":1}`)
		if err == nil && st == http.StatusCreated && time.Since(t0) < 100*time.Millisecond {
			recovered = time.Since(loadEnd)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	goroutines, rss := (<-peaks)()

	classes := map[string][]time.Duration{}
	for _, r := range results {
		k := "slow_or_failed"
		switch {
		case r.status == http.StatusCreated:
			k = "ok"
		case r.status == http.StatusServiceUnavailable && r.d < time.Second:
			k = "fast_503"
		}
		classes[k] = append(classes[k], r.d)
	}
	total := len(results)
	fmt.Printf("overload           rate=%d/s for %s (open loop), %d sent, %d not sent (generator limit)\n", rate, dur, total, dropped.Load())
	for _, k := range []string{"ok", "fast_503", "slow_or_failed"} {
		ls := classes[k]
		slices.Sort(ls)
		pct := func(p float64) time.Duration {
			if len(ls) == 0 {
				return 0
			}
			return ls[min(len(ls)-1, int(float64(len(ls))*p))].Round(100 * time.Microsecond)
		}
		fmt.Printf("  %-15s %6.1f%%  n=%-7d p50=%-10s p99=%s\n", k, 100*float64(len(ls))/float64(max(total, 1)), len(ls), pct(0.5), pct(0.99))
	}
	fmt.Printf("  api peak goroutines=%d, peak RSS=%d MiB; deposits committed=%d, 201s seen by clients=%d; recovered %v after the load\n",
		goroutines, rss>>20, committed()-before, len(classes["ok"]), recovered.Round(time.Millisecond))
	return nil
}

// countDeposits returns a function counting the deposits in the database
// (-1 without one).
func countDeposits(dbURL string) func() int64 {
	return func() int64 {
		if dbURL == "" {
			return -1
		}
		pool, err := pgxpool.New(context.Background(), dbURL)
		if err != nil {
			return -1
		}
		defer pool.Close()
		var n int64
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM movements WHERE kind = 'deposit'`).Scan(&n); err != nil {
			return -1
		}
		return n
	}
}

// samplePeaks scrapes go_goroutines and process_resident_memory_bytes every
// 100 ms until ctx ends; the function it sends returns their maxima.
func samplePeaks(ctx context.Context, url string) <-chan func() (int64, int64) {
	out := make(chan func() (int64, int64), 1)
	go func() {
		var g, rss int64
		client := &http.Client{Timeout: 2 * time.Second}
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				out <- func() (int64, int64) { return g, rss }
				return
			case <-t.C:
			}
			res, err := client.Get(url)
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(res.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				line := sc.Text()
				for name, dst := range map[string]*int64{"go_goroutines ": &g, "process_resident_memory_bytes ": &rss} {
					if v, ok := strings.CutPrefix(line, name); ok {
						f, _ := strconv.ParseFloat(v, 64)
						*dst = max(*dst, int64(f))
					}
				}
			}
			res.Body.Close()
		}
	}()
	return out
}
