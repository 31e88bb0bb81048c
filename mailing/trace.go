package mailing

import (
	"net/netip"
	"strings"
	"time"
)

// Trace says how a submission reached envios. Submit writes it as the
// Received field at the top of the stored message (RFC 5321 §4.4: a server
// that receives a message for further processing adds one), naming the
// message's id in reports so that a recipient's copy leads back to it.
type Trace struct {
	Helo string // the name the client gave in EHLO or HELO
	// Addr is the client's IP address; the zero Addr leaves it out (a
	// relay that keeps its clients' addresses private).
	Addr netip.Addr
	By   string // this server's host name
	With string // protocol (RFC 3848), e.g. "ESMTPSA"; default "ESMTP"
	TLS  string // the TLS version and cipher suite, written as a comment (e.g. "version=TLS1.3 cipher=TLS_AES_128_GCM_SHA256"); empty when none
}

// received returns the Received field for a message, folded as Postfix
// folds its own:
//
//	Received: from app01.servir.local ([10.0.0.7])
//		by relay.servir.gob.pe (envios) with ESMTPSA id 0193…
//		(version=TLS1.3 cipher=TLS_AES_128_GCM_SHA256);
//		Fri, 27 Nov 2026 09:30:00 +0000
//
// Only the id and the time come from envios; the client's name is cut to
// what a domain or address literal may hold, so no client can shape the
// field's syntax.
func (t *Trace) received(id string, now time.Time) field {
	var b strings.Builder
	b.WriteString("Received: from ")
	b.WriteString(traceToken(t.Helo, "unknown", false))
	if t.Addr.IsValid() {
		b.WriteString(" ([")
		a := t.Addr.Unmap()
		if a.Is6() {
			b.WriteString("IPv6:")
		}
		b.WriteString(a.WithZone("").String())
		b.WriteString("])")
	}
	b.WriteString("\r\n\tby ")
	b.WriteString(traceToken(t.By, "localhost", false))
	b.WriteString(" (envios) with ")
	b.WriteString(traceToken(t.With, "ESMTP", false))
	b.WriteString(" id ")
	b.WriteString(id)
	if t.TLS != "" {
		b.WriteString("\r\n\t(")
		b.WriteString(traceToken(t.TLS, "", true))
		b.WriteString(")")
	}
	b.WriteString(";\r\n\t")
	b.WriteString(now.UTC().Format(time.RFC1123Z))
	b.WriteString("\r\n")
	return field{Name: "Received", Raw: []byte(b.String())}
}

// traceToken keeps what a domain, an address literal or a protocol name
// may hold (letters, digits, and - . _ : [ ]), and in a comment also space
// and =, replacing anything else with "_" and cutting it to 255 bytes;
// empty gives def.
func traceToken(s, def string, comment bool) string {
	if len(s) > 255 {
		s = s[:255]
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return def
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '-', r == '.', r == '_', r == ':', r == '[', r == ']':
			return r
		case comment && (r == ' ' || r == '='):
			return r
		}
		return '_'
	}, s)
}
