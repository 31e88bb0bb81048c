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

	"github.com/servir-pe/envios/internal/compose"
	"github.com/servir-pe/envios/internal/mailstore"
)

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
		if compose.CheckHeaderValue("subject", "subject", subject) != nil {
			return
		}
		tpl, err := compose.ParseTemplates(subject, tp, hp, 1<<20)
		if err != nil {
			return
		}
		headers := []Header{{Name: hname, Value: hvalue}}
		if validateHeaders(headers) != nil {
			headers = nil
		}
		out, err := tpl.Render(map[string]any{"N": value})
		if err != nil {
			return
		}
		raw, err := compose.Build(compose.Part{From: Address{Name: "SERVIR", Addr: "avisos@servir.gob.pe"}, To: []Address{{Name: value, Addr: "a@example.com"}},
			Subject: out.Subject, Text: out.Text, HTML: out.HTML, Headers: headers,
			Date: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), MsgID: "id@envios.invalid", Boundary: 1})
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
		tpl, err := compose.ParseTemplates("s", &text, nil, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		row, err := m.batchRecipient(tpl, Recipient{Address: "a@example.com", Data: map[string]string{"N": v, "W": w}})
		if err != nil {
			return
		}
		stored, err := mailstore.DecodeData(row.Data)
		if err != nil {
			t.Fatal(err)
		}
		fast, _ := tpl.Render(map[string]any{"N": v, "W": w})
		slow, err := tpl.Render(stored)
		if err != nil {
			t.Fatal(err)
		}
		if utf8.ValidString(v) && utf8.ValidString(w) && *fast.Text != *slow.Text {
			t.Fatalf("acceptance rendered %q, delivery would render %q", *fast.Text, *slow.Text)
		}
	})
}
