package storetest

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
)

// Proxy stands between a client and a database server on loopback. Down is
// the server stopping as the client sees it: every open connection is
// dropped and new ones are refused, until Up. (The real server is shared
// with the other tests running in parallel, so it is not stopped itself.)
type Proxy struct {
	Addr string // host:port to connect to instead of the server's

	target string
	mu     sync.Mutex
	isDown bool
	conns  map[net.Conn]bool
	cut    func([]byte) bool
	pass   bool // whether the cut's bytes reach the server
	cuts   int
}

// Cuts is how many armed cuts were made.
func (p *Proxy) Cuts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cuts
}

// CutAfter arms a one-time cut: the first bytes from a client for which
// match is true are passed on to the server, and then, once the server
// has had time to act on them, that connection is closed before the
// server's answer reaches the client (the database restarting between a
// COMMIT and its reply).
func (p *Proxy) CutAfter(match func(fromClient []byte) bool) {
	p.mu.Lock()
	p.cut, p.pass = match, true
	p.mu.Unlock()
}

// CutBefore arms a one-time cut like CutAfter's, except that the bytes
// never reach the server (the database crashing as a COMMIT is on its
// way).
func (p *Proxy) CutBefore(match func(fromClient []byte) bool) {
	p.mu.Lock()
	p.cut, p.pass = match, false
	p.mu.Unlock()
}

// cutNow reports whether b is the armed cut's, disarming it, and whether
// b is to reach the server.
func (p *Proxy) cutNow(b []byte) (cut, pass bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut == nil || !p.cut(b) {
		return false, false
	}
	p.cut = nil
	p.cuts++
	return true, p.pass
}

// NewProxy starts a proxy to target (host:port) for the test's duration.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: l.Addr().String(), target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { l.Close(); p.Down() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.isDown {
				p.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			go func() { p.forward(c, up); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

// Down drops every connection and refuses new ones.
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isDown = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Up accepts connections again.
func (p *Proxy) Up() {
	p.mu.Lock()
	p.isDown = false
	p.mu.Unlock()
}

// forward copies what the client c sends to the server up, and makes an
// armed cut.
func (p *Proxy) forward(c, up net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if cut, pass := p.cutNow(buf[:n]); cut {
				// The client's side is closed first, so that the server's
				// answer cannot reach it; the server gets the bytes (if they
				// pass) and the time to act on them before its side is
				// closed too.
				c.Close()
				if pass {
					if _, err := up.Write(buf[:n]); err != nil {
						return
					}
					time.Sleep(200 * time.Millisecond)
				}
				return
			}
			if _, err := up.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// OpenBehindProxy opens a new, migrated PostgreSQL database for the test
// (as Open does) that is reached through a Proxy, with at most maxOpen
// connections (0: store's default).
func OpenBehindProxy(t testing.TB, maxOpen int) (*bun.DB, *Proxy) {
	t.Helper()
	ctx := context.Background()
	u, err := url.Parse(DSN(t, store.Postgres))
	if err != nil {
		t.Fatal(err)
	}
	p := NewProxy(t, u.Host)
	u.Host = p.Addr
	db, err := store.Open(ctx, store.Config{DSN: u.String(), MaxOpenConns: maxOpen})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	return db, p
}

// IsCommit matches what a client sends to commit a transaction, for
// CutAfter and CutBefore.
func IsCommit(fromClient []byte) bool {
	return bytes.Contains(bytes.ToLower(fromClient), []byte("commit\x00"))
}
