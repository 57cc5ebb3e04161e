// Package faultproxy is a TCP proxy in front of PostgreSQL for tests that
// lose connections at chosen moments: around one COMMIT, or all of them for
// a while (a short outage). It reads the protocol's message framing in both
// directions, nothing more, and never touches the server itself.
package faultproxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// CommitFault is what happens to the next COMMIT sent through the proxy.
type CommitFault int

const (
	// LoseReply forwards the COMMIT, drops the server's replies from then
	// on, and drops the client's connection once the server has processed
	// the COMMIT: the transaction commits, the client cannot know. (Dropping
	// it earlier would not do: pgx answers a lost connection with a cancel
	// request, which would cancel a statement still running before the
	// COMMIT, and the transaction would roll back.)
	LoseReply CommitFault = iota + 1
	// LoseCommit drops both connections before the COMMIT reaches the
	// server: the transaction rolls back.
	LoseCommit
	// HoldOpen drops the client's connection before the COMMIT reaches the
	// server and keeps the server's open, idle in transaction, for a while:
	// the transaction's outcome is undecided until then (it rolls back).
	HoldOpen
)

// Proxy forwards connections to a PostgreSQL server.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	pairs map[*pair]struct{}
	down  bool
	fault CommitFault
	skip  int // COMMITs to let through before the fault
	hold  time.Duration
	fired chan struct{}
}

type pair struct {
	client, server net.Conn
	mute           chan struct{} // closed: the server's replies are dropped
	muteOnce       sync.Once
	commits        map[string]bool // prepared statements (by name) that are a COMMIT
}

// Start listens on a free port of 127.0.0.1 and forwards to target
// (host:port); it stops when the test ends.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, pairs: map[*pair]struct{}{}}
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.Cut()
	})
	return p
}

// Around starts a proxy in front of pool's server and returns it with a
// pool like pool (same database, settings and size) that connects through
// it; both stop when the test ends.
func Around(t testing.TB, pool *pgxpool.Pool) (*Proxy, *pgxpool.Pool) {
	t.Helper()
	cfg := pool.Config()
	p := Start(t, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))))
	host, port, _ := net.SplitHostPort(p.Addr())
	n, _ := strconv.Atoi(port)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Fallbacks = host, uint16(n), nil
	proxied, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxied.Close)
	return p, proxied
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// FailNextCommit arms fault for the next COMMIT any connection sends. hold
// is how long HoldOpen keeps the server's side open. The returned channel
// is closed when the fault has happened.
func (p *Proxy) FailNextCommit(fault CommitFault, hold time.Duration) <-chan struct{} {
	return p.FailCommit(1, fault, hold)
}

// FailCommit arms fault for the n-th COMMIT from now (1: the next).
func (p *Proxy) FailCommit(n int, fault CommitFault, hold time.Duration) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault, p.skip, p.hold, p.fired = fault, n-1, hold, make(chan struct{})
	return p.fired
}

// Cut drops every connection and refuses new ones until Restore: the
// database is unreachable.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.down = true
	pairs := p.pairs
	p.pairs = map[*pair]struct{}{}
	p.mu.Unlock()
	for pr := range pairs {
		_ = pr.client.Close()
		_ = pr.server.Close()
	}
}

// Restore accepts connections again after Cut.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			_ = c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		pr := &pair{client: c, server: s, mute: make(chan struct{}), commits: map[string]bool{}}
		p.mu.Lock()
		p.pairs[pr] = struct{}{}
		p.mu.Unlock()
		go p.fromClient(pr)
		go p.fromServer(pr)
	}
}

// isCommit tells whether msg runs a COMMIT: a simple query, or (extended
// protocol, as in a pipelined batch) the Bind of a statement whose Parse
// was a COMMIT. It records the statements msg prepares.
func (pr *pair) isCommit(typ byte, body []byte) bool {
	switch typ {
	case 'Q':
		return isCommitSQL(cstring(body))
	case 'P': // Parse: statement name, query, …
		name := cstring(body)
		pr.commits[string(name)] = isCommitSQL(cstring(body[min(len(name)+1, len(body)):]))
	case 'B': // Bind: portal name, statement name, …
		portal := cstring(body)
		return pr.commits[string(cstring(body[min(len(portal)+1, len(body)):]))]
	}
	return false
}

func isCommitSQL(q []byte) bool {
	return bytes.EqualFold(bytes.TrimRight(bytes.TrimSpace(q), ";"), []byte("commit"))
}

// cstring is the NUL-terminated string b starts with.
func cstring(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// take returns the armed fault, disarming it, if msg runs a COMMIT.
func (p *Proxy) take(pr *pair, typ byte, body []byte) (CommitFault, time.Duration, chan struct{}) {
	if !pr.isCommit(typ, body) {
		return 0, 0, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fault == 0 {
		return 0, 0, nil
	}
	if p.skip > 0 {
		p.skip--
		return 0, 0, nil
	}
	f, hold, fired := p.fault, p.hold, p.fired
	p.fault = 0
	return f, hold, fired
}

func (p *Proxy) fromClient(pr *pair) {
	keepClient := false // LoseReply: fromServer closes it
	defer func() {
		if !keepClient {
			_ = pr.client.Close()
		}
	}()
	// The startup packet (or a cancel request) has no type byte.
	if err := copyUntyped(pr.server, pr.client); err != nil {
		_ = pr.server.Close()
		return
	}
	for {
		typ, body, err := readMessage(pr.client)
		if err != nil {
			_ = pr.server.Close()
			return
		}
		fault, hold, fired := p.take(pr, typ, body)
		switch fault {
		case LoseReply:
			pr.muteOnce.Do(func() { close(pr.mute) })
			_ = writeMessage(pr.server, typ, body)
			// In the extended protocol the COMMIT runs once its Execute and
			// the Sync that ends the round trip are in.
			for typ == 'B' {
				next, body, err := readMessage(pr.client)
				if err != nil {
					break
				}
				_ = writeMessage(pr.server, next, body)
				if next == 'S' {
					break
				}
			}
			keepClient = true
			close(fired)
			return // both sides close once the server has answered (fromServer)
		case LoseCommit:
			_ = pr.client.Close()
			_ = pr.server.Close()
			close(fired)
			return
		case HoldOpen:
			// The server's replies to what it is still running are dropped,
			// not written to the closed client, which would end the pair.
			pr.muteOnce.Do(func() { close(pr.mute) })
			_ = pr.client.Close()
			close(fired)
			time.AfterFunc(hold, func() { _ = pr.server.Close() })
			return
		}
		if err := writeMessage(pr.server, typ, body); err != nil {
			return
		}
	}
}

func (p *Proxy) fromServer(pr *pair) {
	defer func() {
		_ = pr.server.Close()
		p.mu.Lock()
		delete(p.pairs, pr)
		p.mu.Unlock()
	}()
	for {
		typ, body, err := readMessage(pr.server)
		if err != nil {
			_ = pr.client.Close()
			return
		}
		select {
		case <-pr.mute:
			if typ == 'Z' { // ReadyForQuery: the COMMIT has been processed
				_ = pr.client.Close()
				return
			}
			continue
		default:
		}
		if err := writeMessage(pr.client, typ, body); err != nil {
			return
		}
	}
}

func copyUntyped(dst io.Writer, src io.Reader) error {
	var n [4]byte
	if _, err := io.ReadFull(src, n[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size < 4 || size > 1<<20 {
		return errors.New("faultproxy: bad startup packet")
	}
	body := make([]byte, size-4)
	if _, err := io.ReadFull(src, body); err != nil {
		return err
	}
	_, err := dst.Write(append(n[:], body...))
	return err
}

func readMessage(r io.Reader) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	size := binary.BigEndian.Uint32(h[1:])
	if size < 4 || size > 1<<30 {
		return 0, nil, errors.New("faultproxy: bad message length")
	}
	body := make([]byte, size-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return h[0], body, nil
}

func writeMessage(w io.Writer, typ byte, body []byte) error {
	msg := make([]byte, 5+len(body))
	msg[0] = typ
	binary.BigEndian.PutUint32(msg[1:], uint32(4+len(body)))
	copy(msg[5:], body)
	_, err := w.Write(msg)
	return err
}
