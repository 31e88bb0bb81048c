package storetest

import (
	"io"
	"net"
	"sync"
	"testing"
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
			go func() { _, _ = io.Copy(up, c); up.Close() }()
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
