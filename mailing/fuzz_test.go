package mailing

import (
	"bufio"
	"bytes"
	"net/mail"
	"net/textproto"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseAddress: an accepted address has no CR, LF or NUL anywhere, an
// ASCII lowercase domain with a dot, fits RFC 5321's limits, and parses
// again to itself.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"a@example.com", "Ana <ana@example.com>", "luis@münchen.de", `"x y"@example.com`,
		"a@example.com\r\nBcc: b@evil.com", "=?utf-8?q?a=0D=0Ab?= <a@b.pe>", "a@[127.0.0.1]", "@", "a@b", "añ@b.pe", "a@xn--mnchen-3ya.de."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		a, err := ParseAddress(in)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n") && !strings.ContainsAny(in, "\n") {
				t.Fatalf("error gained a line break: %q", err)
			}
			return
		}
		if strings.ContainsAny(a.Addr+a.Name, "\r\n\x00") {
			t.Fatalf("accepted %q with CR/LF/NUL: %+v", in, a)
		}
		d := a.Domain()
		if d != strings.ToLower(d) || !strings.Contains(d, ".") || len(a.Addr) > 254 {
			t.Fatalf("accepted %q as %+v", in, a)
		}
		for i := 0; i < len(d); i++ {
			if d[i] >= 0x80 {
				t.Fatalf("non-ASCII domain %q", d)
			}
		}
		b, err := ParseAddress(a.String())
		if err != nil || b.Addr != a.Addr {
			t.Fatalf("%q → %+v → %q → %+v, %v", in, a, a.String(), b, err)
		}
	})
}

// FuzzRenderAndBuild: whatever the recipient data and the (valid)
// templates, a recipient is either refused or its message has exactly the
// headers envios writes — data can never add a header or split one.
func FuzzRenderAndBuild(f *testing.F) {
	f.Add("Hola {{.N}}", "Texto {{.N}}", "<p>{{.N}}</p>", "Ana", "X-Ref", "v")
	f.Add("{{.N}}", "", "<a href=\"{{.N}}\">x</a>", "x\r\nBcc: evil@example.com", "X-A", "b")
	f.Add("Año {{.N}}", "{{.N}}", "", "=?utf-8?q?a=0D=0Ab?=", "X-B", "ñ")
	f.Add("{{.N}}", "\n.\r\n", "", "\n.\n", "X-C", "c")
	f.Fuzz(func(t *testing.T, subject, text, html, value, hname, hvalue string) {
		var tp, hp *string
		if text != "" {
			tp = &text
		}
		if html != "" {
			hp = &html
		}
		if tp == nil && hp == nil {
			return
		}
		if checkHeaderValue("subject", subject) != nil {
			return
		}
		tpl, err := parseTemplates(subject, tp, hp, 1<<20)
		if err != nil {
			return
		}
		headers := []Header{{hname, hvalue}}
		if validateHeaders(headers) != nil {
			headers = nil
		}
		out, err := tpl.render(map[string]any{"N": value})
		if err != nil {
			return
		}
		raw, err := build(part{from: Address{Name: "SERVIR", Addr: "avisos@servir.gob.pe"}, to: []Address{{Name: value, Addr: "a@example.com"}},
			subject: out.subject, text: out.text, html: out.html, headers: headers,
			date: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), msgID: "id@envios.invalid", boundary: 1})
		if err != nil {
			if strings.ContainsAny(value, "\r\n") {
				return // a display name with a line break is refused by ParseAddress before build
			}
			t.Fatalf("build: %v", err)
		}
		tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
		h, err := tr.ReadMIMEHeader()
		if err != nil {
			t.Fatalf("header does not parse: %v\n%s", err, raw)
		}
		want := map[string]bool{"From": true, "To": true, "Subject": true, "Date": true, "Message-Id": true, "Mime-Version": true, "Content-Type": true, "Content-Transfer-Encoding": true}
		for _, x := range headers {
			want[textproto.CanonicalMIMEHeaderKey(x.Name)] = true
		}
		for k, v := range h {
			if !want[k] {
				t.Fatalf("unexpected header %q: %q (from subject %q, value %q)", k, v, subject, value)
			}
			if len(v) != 1 {
				t.Fatalf("header %s appears %d times", k, len(v))
			}
		}
		if m, err := mail.ReadMessage(bytes.NewReader(raw)); err != nil || m.Header.Get("Message-Id") != "<id@envios.invalid>" {
			t.Fatalf("message does not parse: %v", err)
		}
	})
}

// FuzzFlatDataMatchesStored: for string data, what acceptance renders (the
// fast path) is what delivery renders from the stored JSON.
func FuzzFlatDataMatchesStored(f *testing.F) {
	f.Add("Ana", "x")
	f.Add("\xff\xfe", "<b>")
	f.Add("a\u2028b", "{{.N}}")
	f.Fuzz(func(t *testing.T, v, w string) {
		m := &Mailer{}
		text := "{{.N}}|{{.W}}"
		tpl, err := parseTemplates("s", &text, nil, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		row, err := m.batchRecipient(tpl, Recipient{Address: "a@example.com", Data: map[string]string{"N": v, "W": w}})
		if err != nil {
			return
		}
		stored, err := decodeData(row.Data)
		if err != nil {
			t.Fatal(err)
		}
		fast, _ := tpl.render(map[string]any{"N": v, "W": w})
		slow, err := tpl.render(stored)
		if err != nil {
			t.Fatal(err)
		}
		if utf8.ValidString(v) && utf8.ValidString(w) && *fast.text != *slow.text {
			t.Fatalf("acceptance rendered %q, delivery would render %q", *fast.text, *slow.text)
		}
	})
}
