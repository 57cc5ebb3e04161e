package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/safeflow/safeflow/internal/testdb"
)

// The Grafana dashboard and the Prometheus alert rules in deploy/ name only
// metrics that api serve exports: a renamed metric cannot leave a panel or
// an alert silently empty.
func TestDashboardAndAlertsNameExportedMetrics(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	addr := freeAddr(t)
	vars := map[string]string{"DATABASE_URL": pool.Config().ConnString(), "HTTP_ADDR": addr, "LOG_LEVEL": "error"}
	var out bytes.Buffer
	if code := run(context.Background(), []string{"apikey", "create", "--tenant", "acme"}, env(vars), &out, io.Discard); code != 0 {
		t.Fatal("apikey create failed")
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve"}, env(vars), io.Discard, io.Discard) }()
	defer func() { stop(); <-done }()
	base := "http://" + addr
	waitReady(t, base)
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/accounts", strings.NewReader(`{"currency":"USD"}`))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(out.String()))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "k")
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("create an account: %v %v", res, err)
	}
	if res, err := http.Get(base + "/v1/nothing"); err == nil {
		res.Body.Close() // a problem, for safeflow_problems_total
	}
	waitMetrics(t, base+"/metrics", "safeflow_invariant_violations{", "safeflow_tx_duration_seconds_bucket", "safeflow_problems_total{")
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scrape, _ := io.ReadAll(res.Body)
	res.Body.Close()
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+) `).FindAllStringSubmatch(string(scrape), -1) {
		exported[m[1]] = true
	}

	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	raw, err := os.ReadFile("../../deploy/grafana/safeflow.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil || len(dash.Panels) == 0 {
		t.Fatalf("deploy/grafana/safeflow.json: %v (%d panels)", err, len(dash.Panels))
	}
	var exprs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, p.Title+": "+tg.Expr)
		}
	}
	alerts, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	exprs = append(exprs, "alerts.yml: "+string(alerts))
	name := regexp.MustCompile(`safeflow_[a-z_]+`)
	for _, e := range exprs {
		for _, n := range name.FindAllString(e, -1) {
			base := n
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(n, suffix); ok && exported[b] {
					base = b
				}
			}
			if !exported[base] {
				t.Errorf("%s names %s, which api serve does not export", strings.SplitN(e, ":", 2)[0], n)
			}
		}
	}
}
