package mailing

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jhillyerd/enmime/v2"

	"github.com/servir-pe/envios/internal/address"
	"github.com/servir-pe/envios/internal/compose"
	"github.com/servir-pe/envios/internal/smtpload"
)

// crlf turns a test message written with LF lines into CRLF lines.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// nested is a multipart/mixed message whose one part is nested depth
// times, each level with its own boundary, around a text part.
func nested(depth int) string {
	var b strings.Builder
	b.WriteString("From: a@servir.gob.pe\n")
	for i := range depth {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"n%02dz\"\n\n--n%02dz\n", i, i)
	}
	b.WriteString("Content-Type: text/plain\n\nHola\n")
	for i := depth - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "--n%02dz--\n", i)
	}
	return b.String()
}

// Which messages the walk proves readable, and that checkStructure's
// verdict is always enmime's: proved ones are readable, and the others are
// left to enmime (want "" says the test does not fix enmime's verdict).
func TestStructure(t *testing.T) {
	const h = "From: a@servir.gob.pe\nMIME-Version: 1.0\n"
	alt := "--b1\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\nHola =C3=B1\n" +
		"--b1\nContent-Type: text/html; charset=utf-8\n\n<p>Hola</p>\n--b1--\n"
	long := strings.Repeat("x", 71)
	for _, tc := range []struct {
		name   string
		msg    string // LF lines
		proved bool
		want   string // "readable", "refused" or "" (enmime decides)
	}{
		{"no Content-Type", h + "\nHola\n", true, "readable"},
		{"header only", h, true, "readable"},
		{"text/plain", h + "Content-Type: text/plain; charset=utf-8\n\nHola\n", true, "readable"},
		{"text/plain with a boundary parameter", h + "Content-Type: text/plain; boundary=x\n\n--x\n", true, "readable"},
		{"alternative", h + "Content-Type: multipart/alternative; boundary=b1\n\n" + alt, true, "readable"},
		{"upper case type and parameter", h + "Content-Type: MULTIPART/ALTERNATIVE; BOUNDARY=b1\n\n" + alt, true, "readable"},
		{"folded Content-Type", h + "Content-Type: multipart/alternative;\n\tboundary=\"b1\"\n\n" + alt, true, "readable"},
		{"folded with blank continuation lines", h + "content-type:\n \n multipart/alternative;  \n\t boundary=\"b1\" \n\n" + alt, true, "readable"},
		{"quoted boundary with spaces", h + "Content-Type: multipart/mixed; boundary=\"a b'c\"\n\n--a b'c\n\nx\n--a b'c--\n", true, "readable"},
		{"preamble and epilogue", h + "Content-Type: multipart/mixed; boundary=b1\n\nThis is a multi-part message.\n\n" + alt + "\nepilogo\n", true, "readable"},
		{"close without CRLF", h + "Content-Type: multipart/alternative; boundary=b1\n\n" + strings.TrimSuffix(alt, "\n"), true, "readable"},
		{"empty parts", h + "Content-Type: multipart/mixed; boundary=b1\n\n--b1\n--b1\n\n--b1\nContent-Type: text/plain\n--b1--\n", true, "readable"},
		{"mixed, alternative and an attachment", h + "Content-Type: multipart/mixed; boundary=m\n\n--m\nContent-Type: multipart/alternative; boundary=b1\n\n" + alt +
			"\n--m\nContent-Type: application/pdf; name=a.pdf\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=a.pdf\n\nJVBERi0xLjQK\n--m--\n", true, "readable"},
		{"nested multipart without a boundary", h + "Content-Type: multipart/mixed; boundary=m\n\n--m\nContent-Type: multipart/related\n\nx\n--m--\n", true, "readable"},
		{"nested 16 deep", nested(16), true, "readable"},
		{"nested 17 deep", nested(17), false, "readable"},
		{"multipart without a boundary", h + "Content-Type: multipart/mixed\n\n--x\n\nx\n--x--\n", false, "refused"},
		{"multipart with an unparsable type", h + "Content-Type: multipart/\n\nx\n", false, "refused"},
		{"root Content-Type that does not parse", h + "Content-Type: texto plano\n\nx\n", false, "refused"},
		{"root Content-Type that enmime mends", h + "Content-Type: text/plain; charset=\"\n\nx\n", true, "readable"},
		{"no closing delimiter", h + "Content-Type: multipart/alternative; boundary=b1\n\n" + strings.TrimSuffix(alt, "--b1--\n"), false, "readable"},
		{"no delimiter at all", h + "Content-Type: multipart/mixed; boundary=b1\n\nHola\n", false, "readable"},
		{"boundary inside a line", h + "Content-Type: multipart/mixed; boundary=b1\n\n--b1\n\nuno --b1 dos\n--b1--\n", false, ""},
		{"boundary as a prefix", h + "Content-Type: multipart/mixed; boundary=b1\n\n--b1\n\nx\n--b12\n--b1--\n", false, ""},
		{"delimiter with transport padding", h + "Content-Type: multipart/mixed; boundary=b1\n\n--b1 \n\nx\n--b1--\n", false, "readable"},
		{"delimiter after the close", h + "Content-Type: multipart/mixed; boundary=b1\n\n--b1\n\nx\n--b1--\n--b1\n", false, ""},
		{"close before any part", h + "Content-Type: multipart/mixed; boundary=b1\n\n--b1--\n", false, "readable"},
		{"boundary over 70 characters", h + "Content-Type: multipart/mixed; boundary=" + long + "\n\n--" + long + "\n\nx\n--" + long + "--\n", false, "readable"},
		{"boundary on a non-multipart part", h + "Content-Type: multipart/mixed; boundary=m\n\n--m\nContent-Type: application/zip; boundary=z\n\nx\n--m--\n", false, "readable"},
		{"part of text without a header", h + "Content-Type: multipart/mixed; boundary=m\n\n--m\nHola mundo\n--m--\n", false, "refused"},
		{"part header beginning with a continuation", h + "Content-Type: multipart/mixed; boundary=m\n\n--m\n folded: x\n\nx\n--m--\n", false, "refused"},
		{"part header with a space in a name", h + "Content-Type: multipart/mixed; boundary=m\n\n--m\nContent Type: text/plain\n\nx\n--m--\n", false, "readable"},
		{"part Content-Type that does not parse", h + "Content-Type: multipart/mixed; boundary=m\n\n--m\nContent-Type: texto plano\n\nx\n--m--\n", false, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := []byte(crlf(tc.msg))
			in := bytes.Clone(raw)
			proved := structureProved(raw)
			enmimeErr := parseMIME(context.Background(), raw)
			checkErr := checkStructure(context.Background(), raw)
			if proved != tc.proved {
				t.Errorf("proved %v, want %v", proved, tc.proved)
			}
			if proved && enmimeErr != nil {
				t.Fatalf("proved, but enmime refuses it: %v", enmimeErr)
			}
			if (checkErr == nil) != (enmimeErr == nil) {
				t.Fatalf("checkStructure %v, enmime %v", checkErr, enmimeErr)
			}
			if got := map[bool]string{true: "readable", false: "refused"}[enmimeErr == nil]; tc.want != "" && got != tc.want {
				t.Fatalf("enmime: %s (%v), want %s", got, enmimeErr, tc.want)
			}
			if !bytes.Equal(raw, in) {
				t.Fatal("the message was written into")
			}
		})
	}
}

// The messages the relay and the library see most are proved without
// enmime: the load generator's shapes (a legacy system's notification,
// with and without a PDF) and what envios itself builds.
func TestStructureProvesCommonMessages(t *testing.T) {
	for _, shape := range smtpload.Shapes {
		g, err := smtpload.NewGenerator(shape, 5<<10)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{1, 77, 20_000} {
			if raw := g.Message("avisos@servir.gob.pe", "ana@example.org", n); !structureProved(raw) {
				t.Errorf("%s message %d not proved:\n%s", shape, n, raw)
			}
		}
	}
	text, html := "Estimado(a) Ana,\nsu constancia.\n", "<p>Estimado(a) <b>Ana</b></p>"
	for _, p := range []compose.Part{
		{Text: &text},
		{HTML: &html},
		{Text: &text, HTML: &html},
		{Text: &text, HTML: &html, Attach: []compose.Attachment{{Filename: "c.pdf", ContentType: "application/pdf", Data: smtpload.FakePDF(20_000)}}},
		{Text: &text, HTML: &html, Attach: []compose.Attachment{{Filename: "logo.png", ContentType: "image/png", Data: []byte("\x89PNG"), ContentID: "logo"},
			{Filename: "c.pdf", ContentType: "application/pdf", Data: []byte("%PDF-1.4")}}},
	} {
		p.From, p.To = address.Address{Name: "SERVIR", Addr: "avisos@servir.gob.pe"}, []address.Address{{Addr: "ana@example.org"}}
		p.Subject, p.Date, p.MsgID, p.Boundary = "Constancia", time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC), "x@envios.invalid", 42
		raw, err := compose.Build(p)
		if err != nil {
			t.Fatal(err)
		}
		if !structureProved(raw) {
			t.Errorf("not proved:\n%s", raw)
		}
	}
}

// randomEntity is a MIME entity (LF lines) built from r: mostly what
// mail software writes, now and then what it should not — boundaries
// that are prefixes of one another or over 70 characters, a boundary
// inside a line, padding after a delimiter, a missing or repeated close,
// folded and odd header lines, parts without a header.
func randomEntity(r *rand.Rand, depth int) string {
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	var b strings.Builder
	for range r.IntN(3) {
		b.WriteString(pick("X-Ref: 1\n", "Content-Transfer-Encoding: base64\n", "X-A:\n\tfolded\n", "Content-Disposition: attachment; filename=a.pdf\n",
			"X Y: odd\n", " continued\n", "no colon\n", "Content-ID: <a@b>\n"))
	}
	if depth > 3 || r.IntN(3) == 0 {
		b.WriteString(pick("", "Content-Type: text/plain; charset=utf-8\n", "content-type: TEXT/HTML\n", "Content-Type: application/pdf; name=a.pdf\n",
			"Content-Type: text/plain; boundary=b\n", "Content-Type: texto plano\n", "Content-Type: multipart/mixed\n"))
		b.WriteString(pick("\n", "\n", ""))
		for range r.IntN(4) {
			b.WriteString(pick("Hola\n", "\n", "--b\n", "x --b1 y\n", "--b1--\n", "=C3=B1\n", "JVBERi0xLjQK\n", "--\n"))
		}
		return b.String()
	}
	bd := pick("b", "b1", "b12", "=_Part_1", "a b", strings.Repeat("z", 71), "b1"+fmt.Sprint(depth))
	fmt.Fprintf(&b, "%s\n\n", pick("Content-Type: multipart/mixed; boundary=\""+bd+"\"", "Content-Type: multipart/alternative;\n\tboundary=\""+bd+"\"",
		"Content-Type: MULTIPART/RELATED; BOUNDARY=\""+bd+"\"", "Content-Type: application/zip; boundary=\""+bd+"\""))
	b.WriteString(pick("", "", "preamble\n", "\n"))
	for range 1 + r.IntN(3) {
		b.WriteString(pick("--"+bd+"\n", "--"+bd+"\n", "--"+bd+"\n", "--"+bd+" \n", "--"+bd+"x\n"))
		b.WriteString(randomEntity(r, depth+1))
		b.WriteString(pick("\n", "", "\n\n"))
	}
	b.WriteString(pick("--"+bd+"--\n", "--"+bd+"--\n", "--"+bd+"--", "", "--"+bd+"-- x\n", "--"+bd+"--\n--"+bd+"\n"))
	b.WriteString(pick("", "", "epilogue\n"))
	return b.String()
}

// Random trees: whatever the walk proves, enmime reads; and it proves
// a good share of them, so the proof is exercised.
func TestStructureRandomTrees(t *testing.T) {
	r := rand.New(rand.NewPCG(16, 2026))
	proved := 0
	const n = 4000
	for i := range n {
		raw := []byte(crlf("From: a@servir.gob.pe\n" + randomEntity(r, 0)))
		if !structureProved(raw) {
			continue
		}
		proved++
		if err := parseMIME(context.Background(), raw); err != nil {
			t.Fatalf("tree %d proved, but enmime refuses it: %v\n%s", i, err, raw)
		}
	}
	if proved < n/10 {
		t.Fatalf("only %d of %d trees proved", proved, n)
	}
	t.Logf("%d of %d trees proved", proved, n)
}

// contentType reads a header as enmime's ReadHeader does.
func TestContentType(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   string
		ok     bool
	}{
		{"From: a\nContent-Type: text/plain\n\n", "text/plain", true},
		{"content-TYPE:text/plain  \n\n", "text/plain", true},
		{"Content-Type: multipart/mixed;\n\tboundary=x\n\n", "multipart/mixed; boundary=x", true},
		{"Content-Type: a;   \n  \n\tb=c\n", "a;  b=c", true},
		{"Content-Type:\n a\n", "a", true},
		{"Content-Type: a\nContent-Type: b\n\n", "a", true},
		{"X: 1\n\n", "", true},
		{"", "", true},
		{" a: b\n\n", "", false},
		{"Hola\n\n", "", false},
		{": x\n\n", "", false},
		{"X Y: 1\n\n", "", false},
	} {
		got, ok := contentType([]byte(crlf(tc.header)))
		if got != tc.want || ok != tc.ok {
			t.Errorf("contentType(%q) = %q, %v; want %q, %v", tc.header, got, ok, tc.want, tc.ok)
		}
		if ok {
			h, err := enmime.ReadHeader(bufio.NewReader(strings.NewReader(crlf(tc.header))), ignoreErrors{})
			if err != nil || h.Get("Content-Type") != got {
				t.Errorf("%q: enmime reads %q (%v), contentType %q", tc.header, h.Get("Content-Type"), err, got)
			}
		}
	}
}

// ignoreErrors discards what enmime's header reader notes on the way.
type ignoreErrors struct{}

func (ignoreErrors) AddError(string, string, ...any)   {}
func (ignoreErrors) AddWarning(string, string, ...any) {}
