package smtpout_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/servir-pe/envios/mailing/mailtest"
	"github.com/servir-pe/envios/mailing/smtpout"
)

func TestMXGroup(t *testing.T) {
	for _, tt := range []struct {
		hosts []string
		want  string
	}{
		{[]string{"gmail-smtp-in.l.google.com."}, "google.com"},
		{[]string{"aspmx.l.google.com", "alt1.aspmx.l.google.com"}, "google.com"}, // Google Workspace
		{[]string{"smtp.google.com"}, "google.com"},
		{[]string{"hotmail-com.olc.protection.outlook.com"}, "outlook.com"},
		{[]string{"servir-gob-pe.mail.protection.outlook.com"}, "outlook.com"}, // a Microsoft 365 tenant
		{[]string{"mta5.am0.yahoodns.net", "mta6.am0.yahoodns.net"}, "yahoodns.net"},
		{[]string{"mx.servir.gob.pe"}, "servir.gob.pe"}, // under a public suffix of two labels
		{[]string{"mx1.a.example", "MX.b.example."}, "a.example,b.example"},
		{[]string{"localhost"}, "localhost"},
	} {
		if got := smtpout.MXGroup(tt.hosts); got != tt.want {
			t.Errorf("MXGroup(%v) = %q, want %q", tt.hosts, got, tt.want)
		}
	}
}

func TestRoute(t *testing.T) {
	dns := mailtest.NewDNS(t, mailtest.Zone{MX: map[string][]mailtest.MX{
		"uno.test.":    {{Pref: 10, Host: "mx1.shared.test."}},
		"dos.test.":    {{Pref: 5, Host: "mx2.shared.test."}, {Pref: 50, Host: "backup.other.test."}}, // the backup does not count
		"nullmx.test.": {{Pref: 0, Host: "."}},
	}, A: map[string]string{"amx.test.": "127.0.0.1"}})
	x := &smtpout.DirectMX{Resolver: smtpout.NewResolver(dns)}
	ctx := context.Background()
	for domain, want := range map[string]string{
		"uno.test":        "shared.test",
		"DOS.test":        "shared.test",
		"amx.test":        "amx.test",      // no MX: its own address, its own group
		"nowhere.test":    "nowhere.test",  // does not exist
		"servfail.test":   "servfail.test", // DNS failure: on its own
		"nullmx.test":     "nullmx.test",
		"sub.amx.test.pe": "sub.amx.test.pe", // nothing known
	} {
		if r := x.Route(ctx, domain); r.Key != want || r.Group != want || r.Smarthost {
			t.Errorf("Route(%s) = %+v, want %s", domain, r, want)
		}
	}
	sh := &smtpout.Smarthost{Addr: "smtp.example.net:587"}
	if r := sh.Route(ctx, "Gmail.com"); r != (smtpout.Route{Key: "smtp.example.net:587", Group: "gmail.com", Smarthost: true}) {
		t.Errorf("Smarthost.Route = %+v", r)
	}
}

// countingResolver counts MX lookups.
type countingResolver struct {
	mx atomic.Int64
}

func (r *countingResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	r.mx.Add(1)
	if name == "flaky.test" {
		return nil, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	return []*net.MX{{Host: "mx." + name + ".", Pref: 10}}, nil
}

func (r *countingResolver) LookupHost(context.Context, string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", IsNotFound: true}
}

// Route's lookup serves the Deliver that follows, and later routes, for
// MXCacheTTL; a temporary DNS failure is not remembered.
func TestRouteCachesLookups(t *testing.T) {
	r := &countingResolver{}
	x := &smtpout.DirectMX{Resolver: r, Timeout: time.Second}
	ctx := context.Background()
	for range 3 {
		x.Route(ctx, "cached.test")
	}
	_ = x.Deliver(ctx, "b@envios.test", []string{"a@cached.test"}, []byte("Subject: x\r\n\r\nx\r\n")) // mx.cached.test has no address
	if n := r.mx.Load(); n != 1 {
		t.Fatalf("%d MX lookups for three routes and a delivery, want 1", n)
	}
	x.Route(ctx, "flaky.test")
	x.Route(ctx, "flaky.test")
	if n := r.mx.Load(); n != 3 {
		t.Fatalf("%d MX lookups, want a temporary failure looked up again", n)
	}
	y := &smtpout.DirectMX{Resolver: r, MXCacheTTL: -1}
	y.Route(ctx, "cached.test")
	y.Route(ctx, "cached.test")
	if n := r.mx.Load(); n != 5 {
		t.Fatalf("%d MX lookups, want every one without the cache", n)
	}
}
