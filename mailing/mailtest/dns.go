package mailtest

import (
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// Zone is what a DNS test server knows: MX records (preference and host)
// and A records by name (fully qualified, with the final dot). The name
// "servfail.test." always fails with SERVFAIL; unknown names are NXDOMAIN;
// a known name asked for a type it lacks gets NODATA.
type Zone struct {
	MX  map[string][]MX
	A   map[string]string
	TXT map[string][]string // each value one TXT record
}

// MX is one MX record.
type MX struct {
	Pref uint16
	Host string // "." for a null MX
}

// NewDNS starts a recursive-resolver-like DNS server on 127.0.0.1 (UDP)
// answering from a copy of zone, and returns its address (use it with
// mailing.NewResolver). It stops when the test ends.
func NewDNS(t testing.TB, zone Zone) string {
	t.Helper()
	z := zone.clone() // the caller may change its Zone afterwards
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		q := r.Question[0]
		name := strings.ToLower(q.Name)
		_, hasMX := z.MX[name]
		_, hasA := z.A[name]
		_, hasTXT := z.TXT[name]
		switch {
		case name == "servfail.test.":
			m.Rcode = dns.RcodeServerFailure
		case !hasMX && !hasA && !hasTXT:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeMX:
			for _, mx := range z.MX[name] {
				m.Answer = append(m.Answer, &dns.MX{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeMX, Class: dns.ClassINET, Ttl: 60},
					Preference: mx.Pref, Mx: mx.Host})
			}
		case q.Qtype == dns.TypeTXT && hasTXT:
			for _, v := range z.TXT[name] {
				var parts []string // TXT strings are at most 255 bytes each
				for len(v) > 255 {
					parts, v = append(parts, v[:255]), v[255:]
				}
				m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
					Txt: append(parts, v)})
			}
		case q.Qtype == dns.TypeA && hasA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.ParseIP(z.A[name])})
		}
		if m.Rcode == dns.RcodeSuccess && len(m.Answer) == 0 { // NODATA carries the zone's SOA
			m.Ns = append(m.Ns, &dns.SOA{Hdr: dns.RR_Header{Name: "test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
				Ns: "ns.test.", Mbox: "hostmaster.test.", Serial: 1, Refresh: 60, Retry: 60, Expire: 60, Minttl: 60})
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

func (z Zone) clone() Zone {
	c := Zone{MX: map[string][]MX{}, A: map[string]string{}, TXT: map[string][]string{}}
	for k, v := range z.MX {
		c.MX[k] = append([]MX(nil), v...)
	}
	for k, v := range z.A {
		c.A[k] = v
	}
	for k, v := range z.TXT {
		c.TXT[k] = append([]string(nil), v...)
	}
	return c
}
