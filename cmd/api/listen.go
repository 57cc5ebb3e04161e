package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/safeflow/safeflow/client"
)

// listenForWebhooks runs `api listen`: a local receiver for development, as `stripe
// listen` is. It subscribes an endpoint on 127.0.0.1 to the tenant's events
// (or takes over its own from an earlier run, with a new secret), verifies
// every delivery's signature, prints one line per event (and its body with
// --print-json), answers 204, and deletes its endpoint when ctx ends
// (Ctrl-C). It needs no database: it talks to the API like any client.
func listenForWebhooks(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("listen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	api := fs.String("api", "http://localhost:8080", "the API's base URL")
	key := fs.String("key", getenv("SAFEFLOW_KEY"), "the tenant's API key (default $SAFEFLOW_KEY)")
	addr := fs.String("addr", "127.0.0.1:4242", "where to receive deliveries (127.0.0.1)")
	events := fs.String("events", "", "comma-separated event types to receive (default: all)")
	printJSON := fs.Bool("print-json", false, "print each event's body too")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *key == "" {
		return usageError("usage: api listen [--api URL] [--key KEY] [--addr 127.0.0.1:PORT] [--events a,b] [--print-json]\n" +
			"  the key comes from --key or SAFEFLOW_KEY")
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return usageError("listen: --addr: " + err.Error())
	}
	defer ln.Close()
	c := &apiClient{base: strings.TrimSuffix(*api, "/"), key: *key}
	url := "http://" + ln.Addr().String() + "/webhooks"
	var types []string
	if *events != "" {
		types = strings.Split(*events, ",")
	}
	ep, err := c.ownEndpoint(ctx, url, types)
	if err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		if err := c.do(dctx, http.MethodDelete, "/v1/webhook-endpoints/"+ep.ID, "", nil, nil); err != nil {
			fmt.Fprintf(stderr, "api listen: endpoint %s was not deleted: %v\n", ep.ID, err)
			return
		}
		fmt.Fprintf(stdout, "deleted endpoint %s\n", ep.ID)
	}()
	fmt.Fprintf(stdout, "listening on %s as endpoint %s (events: %s); Ctrl-C stops and deletes it\n", url, ep.ID, typesOrAll(types))

	var mu sync.Mutex // one event's lines together
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		mu.Lock()
		defer mu.Unlock()
		id, err := client.VerifyWebhook(ep.Secret, r.Header, body, time.Now())
		if err != nil {
			fmt.Fprintf(stdout, "%s  REFUSED  %v\n", time.Now().Format("15:04:05"), err)
			http.Error(w, "bad signature", http.StatusBadRequest)
			return
		}
		var env struct {
			Type          string `json:"type"`
			AggregateID   string `json:"aggregate_id"`
			Sequence      int64  `json:"sequence"`
			AggregateType string `json:"aggregate_type"`
		}
		_ = json.Unmarshal(body, &env)
		fmt.Fprintf(stdout, "%s  %-20s %s  %s #%d\n", time.Now().Format("15:04:05"), env.Type, id, env.AggregateID, env.Sequence)
		if *printJSON {
			var out bytes.Buffer
			if json.Indent(&out, body, "  ", "  ") == nil {
				fmt.Fprintf(stdout, "  %s\n", out.String())
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func typesOrAll(types []string) string {
	if len(types) == 0 {
		return "all"
	}
	return strings.Join(types, ", ")
}

// apiClient is the few calls api listen makes.
type apiClient struct{ base, key string }

type listenEndpoint struct {
	ID     string `json:"id"`
	URL    string `json:"url"`
	Secret string `json:"secret"`
}

// ownEndpoint creates the endpoint for url, or takes over the one an earlier
// run left there (its secret is not shown again, so it gets a new one; the
// old one stops at once) and subscribes it to types.
func (c *apiClient) ownEndpoint(ctx context.Context, url string, types []string) (listenEndpoint, error) {
	var page struct {
		Data []listenEndpoint `json:"data"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/webhook-endpoints?limit=100", "", nil, &page); err != nil {
		return listenEndpoint{}, err
	}
	body, _ := json.Marshal(map[string]any{"url": url, "event_types": append([]string{}, types...)})
	var ep listenEndpoint
	for _, e := range page.Data {
		if e.URL == url {
			if err := c.do(ctx, http.MethodPatch, "/v1/webhook-endpoints/"+e.ID, newKey(), body, nil); err != nil {
				return listenEndpoint{}, err
			}
			err := c.do(ctx, http.MethodPost, "/v1/webhook-endpoints/"+e.ID+"/rotate-secret", newKey(), []byte(`{"expire_previous_after_seconds":0}`), &ep)
			return ep, err
		}
	}
	err := c.do(ctx, http.MethodPost, "/v1/webhook-endpoints", newKey(), body, &ep)
	var pe *problemError
	if errors.As(err, &pe) && pe.Status == http.StatusBadRequest && strings.Contains(pe.Body, `"url"`) {
		return listenEndpoint{}, fmt.Errorf("%w\nthe server refuses loopback URLs: run it with WEBHOOK_ALLOW_PRIVATE=true (make run does)", err)
	}
	return ep, err
}

type problemError struct {
	Status int
	Body   string
}

func (e *problemError) Error() string {
	return fmt.Sprintf("the API answered %d: %s", e.Status, e.Body)
}

// do sends one request (with idemKey as its Idempotency-Key when set) and
// decodes a 2xx answer into out; anything else is a *problemError.
func (c *apiClient) do(ctx context.Context, method, path, idemKey string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if res.StatusCode/100 != 2 {
		return &problemError{res.StatusCode, strings.TrimSpace(string(b))}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// newKey is a fresh Idempotency-Key: one intended change each.
func newKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "listen-" + hex.EncodeToString(b)
}
