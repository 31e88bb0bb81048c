package mailing

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzSplitHeader: splitHeader never panics; what it accepts it splits
// without losing or adding a byte (the fields' Raw, then CRLF and the body
// when there is one, are the input), into fields with printable-ASCII
// names and CRLF-only line ends, without writing into the input; what
// it refuses is ErrContent. checkBody accepts only CRLF-terminated lines
// without NUL.
func FuzzSplitHeader(f *testing.F) {
	for _, s := range []string{
		"",
		"\r\n",
		"\r\n\r\n",
		"From: a@b.pe\r\n",
		"From: a@b.pe\r\nTo: c@d.pe\r\nSubject: Hola\r\n\r\nCuerpo\r\n",
		"From: a@b.pe\r\nBcc: x@y.pe,\r\n\tz@y.pe\r\nSubject: folded\r\n  twice\r\n\r\n",
		"X-Envios-Priority: bulk\r\n Bcc: x@evil.com\r\n\r\nbody",
		"From: a@b.pe\nBcc: x@evil.com\r\n\r\n",
		"From: a@b.pe\r\nSubject: a\rb\r\n\r\n",
		"From: a@b.pe\r\nX-Ref: a\x00b\r\n\r\n",
		"From: a@b.pe\r\n\r\nuno\rdos\r\nuno\ndos\x00\r\n.\r\n",
		" continues nothing\r\n",
		"no colon here\r\n",
		": empty name\r\n",
		"X Ref: space in name\r\n",
		"X-\xc3\x91: eight bit\r\n",
		"Name:\r\n",
		"Name:value-without-crlf",
		"From: a@b.pe\r\n\r",
		"From: a@b.pe\r\n\r\n\r\n.\r\nMAIL FROM:<x@evil.com>\r\n",
		"Subject: =?utf-8?q?a=0D=0Ab?=\r\n\r\n",
		"\t\r\n",
		"A:\r\n \r\n\t\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		in := bytes.Clone(msg)
		fields, body, err := splitHeader(msg)
		if err != nil {
			if !errors.Is(err, ErrContent) || fields != nil || body != nil {
				t.Fatalf("refusal %v with fields %q body %q", err, fields, body)
			}
			return
		}
		got := joinFields(fields)
		if body != nil {
			got = append(got, "\r\n"...)
			got = append(got, body...)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("split %q then joined gives %q", msg, got)
		}
		if body == nil && (bytes.HasPrefix(msg, []byte("\r\n")) || bytes.Contains(msg, []byte("\r\n\r\n"))) {
			t.Fatalf("the blank line ending the header was missed in %q", msg)
		}
		for _, fl := range fields {
			if fl.Name == "" {
				t.Fatalf("empty field name in %q", msg)
			}
			for i := 0; i < len(fl.Name); i++ {
				if c := fl.Name[i]; c == ':' || c < 33 || c > 126 {
					t.Fatalf("field name %q has byte %#x", fl.Name, c)
				}
			}
			if !bytes.HasPrefix(fl.Raw, []byte(fl.Name+":")) || !bytes.HasSuffix(fl.Raw, []byte("\r\n")) {
				t.Fatalf("field %q: raw %q", fl.Name, fl.Raw)
			}
			lines := bytes.Split(fl.Raw[:len(fl.Raw)-2], []byte("\r\n"))
			for i, l := range lines {
				if bytes.ContainsAny(l, "\r\n\x00") {
					t.Fatalf("field %q line %d has a bare CR, LF or NUL: %q", fl.Name, i, l)
				}
				if i > 0 && (len(l) == 0 || (l[0] != ' ' && l[0] != '\t')) {
					t.Fatalf("field %q line %d is not a continuation: %q", fl.Name, i, l)
				}
			}
			if v := fl.Value(); bytes.ContainsAny([]byte(v), "\r\n") {
				t.Fatalf("field %q value %q keeps a line break", fl.Name, v)
			}
		}
		if !bytes.Equal(msg, in) {
			t.Fatalf("the input was written into: %q became %q", in, msg)
		}
		if err := checkBody(body); err != nil {
			if !errors.Is(err, ErrContent) {
				t.Fatalf("checkBody: %v", err)
			}
			return
		}
		if bytes.IndexByte(body, 0) >= 0 || bytes.Count(body, []byte("\r")) != bytes.Count(body, []byte("\r\n")) ||
			bytes.Count(body, []byte("\n")) != bytes.Count(body, []byte("\r\n")) {
			t.Fatalf("checkBody accepted %q", body)
		}
	})
}

// FuzzReceived: whatever a client says in EHLO (and whatever the server's
// name, protocol and TLS comment are), the Received field is one field of
// lines within RFC 5322's 998, its "from" and "by" parts are one token each,
// and it names the message's id and time.
func FuzzReceived(f *testing.F) {
	f.Add("app01.servir.local", "10.0.0.7", "relay.servir.gob.pe", "ESMTPSA", "version=TLS1.3 cipher=TLS_AES_128_GCM_SHA256")
	f.Add("x by evil; id 1 (a)", "2001:db8::7", "", "", "")
	f.Add("[127.0.0.1]", "::ffff:10.0.0.7", "h\r\nBcc: x@y", "ESMTP\r\n", "a) (b")
	f.Add(strings.Repeat("a", 2000), "fe80::1%eth0", strings.Repeat("é", 300), "", strings.Repeat("c", 999))
	now := time.Date(2026, 11, 27, 9, 30, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, helo, addr, by, with, tlsc string) {
		tr := Trace{Helo: helo, By: by, With: with, TLS: tlsc}
		tr.Addr, _ = netip.ParseAddr(addr)
		fd := tr.received("0193abcd", now)
		fields, body, err := splitHeader(append(append([]byte(nil), fd.Raw...), "\r\n"...))
		if err != nil || len(fields) != 1 || len(body) != 0 || fields[0].Name != "Received" {
			t.Fatalf("%q: %d fields, %v", fd.Raw, len(fields), err)
		}
		for _, l := range bytes.Split(fd.Raw, []byte("\r\n")) {
			if len(l) > 998 {
				t.Fatalf("a line of %d bytes", len(l))
			}
		}
		v := fields[0].Value()
		words := strings.Fields(v)
		if len(words) < 4 || words[0] != "from" || strings.ContainsAny(words[1], "();") {
			t.Fatalf("from part: %q", v)
		}
		i := slices.Index(words[2:], "by") + 2
		if i < 2 || i+1 >= len(words) || strings.ContainsAny(words[i+1], "();") || !strings.Contains(v, " id 0193abcd") ||
			!strings.HasSuffix(strings.Join(words, " "), "; "+now.Format(time.RFC1123Z)) {
			t.Fatalf("%q", v)
		}
		if tr.Addr.IsValid() != strings.HasPrefix(words[2], "([") {
			t.Fatalf("address %q (valid %v) in %q", addr, tr.Addr.IsValid(), v)
		}
	})
}
