package smtpout

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Resolver is the part of *net.Resolver direct delivery uses.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// DirectMX delivers to each recipient domain's own mail servers (RFC 5321
// §5): MX hosts in preference order, the domain's address when it has no
// MX, a permanent failure for a null MX (RFC 7505) or a domain that does
// not exist, a temporary one when DNS cannot answer. STARTTLS is used when
// offered: verified if the certificate is valid, else unverified (as most
// MTAs do), and which one is recorded in the result.

type DirectMX struct {
	// Resolver looks up MX and address records. Default net.DefaultResolver.
	Resolver Resolver
	// Port is the destination port. Default "25" (tests use a sink's port).
	Port string
	// RootCAs verifies the servers' certificates. Default: the system's.
	RootCAs *x509.CertPool
	// HelloName is the name relayd gives in EHLO: the sending host's own
	// name, which receivers check. Default: the machine's host name.
	HelloName string
	// Timeout bounds each delivery. Default 2 minutes.
	Timeout time.Duration
	// MXCacheTTL is how long a domain's MX hosts (or its permanent
	// failure: null MX, no such domain) are remembered, for Route and
	// Deliver alike; a DNS failure is never remembered. Default 5 minutes;
	// negative: every call looks up.
	MXCacheTTL time.Duration

	mu    sync.Mutex
	cache map[string]mxEntry
}

var _ Transport = (*DirectMX)(nil)

// NewResolver returns a resolver that asks only the DNS server at addr
// (host:port), for tests and for sites with their own resolver.
func NewResolver(addr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}

// Deliver sends one transaction to the servers of the recipients' domain
// (all must share a domain, as the engine's transactions do).
func (x *DirectMX) Deliver(ctx context.Context, from string, to []string, msg []byte) []Result {
	if len(to) == 0 {
		return nil
	}
	domain := strings.ToLower(to[0][strings.LastIndexByte(to[0], '@')+1:])
	timeout := x.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m := x.lookup(ctx, domain)
	if m.fail != nil {
		return all(to, *m.fail)
	}
	hosts := m.hosts
	var last Result
	for _, h := range hosts {
		c, tlsNote, err := x.connect(ctx, h, timeout)
		if err != nil {
			last = resultOf(h, "connect", err)
			continue // the next address, or the next MX
		}
		results, _, _ := transaction(c, h, from, to, msg)
		_ = c.Quit()
		c.Close()
		for i := range results {
			results[i].Text = strings.TrimSpace(results[i].Text + " [" + tlsNote + "]")
		}
		return results
	}
	return all(to, last)
}

// hosts resolves where mail for domain goes (the MX hosts in preference
// order, and how many share the best preference), or the failure to record.
func (x *DirectMX) hosts(ctx context.Context, domain string) ([]string, int, *Result) {
	r := x.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	mxs, err := r.LookupMX(ctx, domain)
	var dnsErr *net.DNSError
	switch {
	case err == nil && len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == ""):
		return nil, 0, &Result{Code: 556, Enhanced: "5.1.10", Text: domain + " does not accept mail (null MX, RFC 7505)"}
	case err == nil && len(mxs) > 0:
		sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Pref < mxs[j].Pref })
		var hosts []string
		best := 0
		for _, mx := range mxs {
			hosts = append(hosts, strings.TrimSuffix(mx.Host, "."))
			if mx.Pref == mxs[0].Pref {
				best++
			}
		}
		return hosts, best, nil
	case err != nil && !(errors.As(err, &dnsErr) && dnsErr.IsNotFound):
		return nil, 0, &Result{Enhanced: "4.4.3", Text: "DNS lookup of MX for " + domain + " failed: " + err.Error()}
	}
	// No MX (or no such name): the domain's own address, if it has one.
	addrs, err := r.LookupHost(ctx, domain)
	if err == nil && len(addrs) > 0 {
		return []string{domain}, 1, nil
	}
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound || err == nil {
		return nil, 0, &Result{Code: 550, Enhanced: "5.1.2", Text: domain + " has no mail server (no MX and no address)"}
	}
	return nil, 0, &Result{Enhanced: "4.4.3", Text: "DNS lookup of " + domain + " failed: " + err.Error()}
}

// connect opens a session with host: STARTTLS verified if it can be,
// unverified if not, plain if not offered; the note says which.
func (x *DirectMX) connect(ctx context.Context, host string, timeout time.Duration) (*smtp.Client, string, error) {
	port := x.Port
	if port == "" {
		port = "25"
	}
	r := x.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	ips, err := r.LookupHost(ctx, host) // with our resolver, not the system's
	if err != nil {
		return nil, "", err
	}
	var lastErr error
	for _, ip := range ips {
		c, note, err := x.connectAddr(ctx, host, net.JoinHostPort(ip, port), timeout)
		if err == nil {
			return c, note, nil
		}
		lastErr = err
	}
	return nil, "", lastErr
}

func (x *DirectMX) connectAddr(ctx context.Context, host, addr string, timeout time.Duration) (*smtp.Client, string, error) {
	for _, verify := range []bool{true, false} {
		hello := x.HelloName
		if hello == "" {
			hello, _ = os.Hostname()
		}
		sh := &Smarthost{Addr: addr, HelloName: hello,
			TLS: &tls.Config{ServerName: host, RootCAs: x.RootCAs, InsecureSkipVerify: !verify, MinVersion: tls.VersionTLS12}}
		c, tlsOn, err := sh.connect(ctx, host, timeout)
		if err != nil {
			var ce *tls.CertificateVerificationError
			if verify && errors.As(err, &ce) {
				continue // try again, encrypted but unverified
			}
			return nil, "", err
		}
		switch {
		case !tlsOn:
			return c, "no TLS", nil
		case verify:
			return c, "TLS verified", nil
		default:
			return c, "TLS unverified", nil
		}
	}
	return nil, "", fmt.Errorf("connect to %s failed", addr)
}
