package smtpload

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// leaf is one non-multipart part of a message, decoded.
type leaf struct {
	ctype, filename string
	body            []byte
}

// walk reads a message with mime/multipart and returns its leaves and the
// multipart types on the way, in order.
func walk(t *testing.T, h textprotoHeader, body io.Reader, depth int) (leaves []leaf, types []string) {
	t.Helper()
	ct := h.Get("Content-Type")
	if ct == "" {
		ct = "text/plain" // RFC 2045 §5.2
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		t.Fatalf("Content-Type %q: %v", h.Get("Content-Type"), err)
	}
	if strings.HasPrefix(mt, "multipart/") {
		if depth > 3 {
			t.Fatal("nested too deep")
		}
		types = append(types, mt)
		r := multipart.NewReader(body, params["boundary"])
		for {
			p, err := r.NextRawPart()
			if err == io.EOF {
				return leaves, types
			}
			if err != nil {
				t.Fatalf("%s: %v", mt, err)
			}
			l, ty := walk(t, p.Header, p, depth+1)
			leaves, types = append(leaves, l...), append(types, ty...)
		}
	}
	var r io.Reader = body
	switch strings.ToLower(h.Get("Content-Transfer-Encoding")) {
	case "quoted-printable":
		r = quotedprintable.NewReader(body)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, body)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s: %v", mt, err)
	}
	_, dp, _ := mime.ParseMediaType(h.Get("Content-Disposition"))
	return []leaf{{ctype: mt, filename: dp["filename"], body: b}}, types
}

type textprotoHeader interface{ Get(string) string }

// Every shape's messages parse with net/mail and mime/multipart, are the
// structure and size promised, differ from one another, and are
// personalised in the subject and the bodies.
func TestShapes(t *testing.T) {
	const b64 = (PDFSize + 2) / 3 * 4 // the attachment in base64, without line ends
	for _, tc := range []struct {
		shape      Shape
		size       int
		types      string // the multipart types, outside in
		leaves     string // the leaves' types
		min, max   int    // the message's size
		attachment int
	}{
		{Plain, 5120, "", "text/plain", 5120 - 60, 5120, 0},
		{Multipart, 5120, "multipart/alternative", "text/plain text/html", 5120 - 160, 5120, 0},
		{Multipart, 20_000, "multipart/alternative", "text/plain text/html", 20_000 - 160, 20_000, 0},
		{PDF, 5120, "multipart/mixed multipart/alternative", "text/plain text/html application/pdf",
			5120 - 160 + b64 + b64/76*2, 5120 + b64 + b64/76*2 + 800, PDFSize},
	} {
		t.Run(fmt.Sprintf("%s/%d", tc.shape, tc.size), func(t *testing.T) {
			g, err := NewGenerator(tc.shape, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, n := range []int{1, 2, 77, 4_096, 19_999, 123_456} {
				raw := g.Message("avisos@servir.gob.pe", fmt.Sprintf("dest%d@example.org", n), n)
				if len(raw) < tc.min || len(raw) > tc.max {
					t.Errorf("message %d: %d bytes, want %d to %d", n, len(raw), tc.min, tc.max)
				}
				if bytes.Count(raw, []byte("\n")) != bytes.Count(raw, []byte("\r\n")) || !bytes.HasSuffix(raw, []byte("\r\n")) {
					t.Fatalf("message %d: a line does not end in CRLF", n)
				}
				m, err := mail.ReadMessage(bytes.NewReader(raw))
				if err != nil {
					t.Fatalf("message %d: %v", n, err)
				}
				if a, err := m.Header.AddressList("To"); err != nil || a[0].Address != fmt.Sprintf("dest%d@example.org", n) {
					t.Fatalf("message %d: To %v %v", n, a, err)
				}
				subject, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
				if err != nil || seen[subject] {
					t.Fatalf("message %d: subject %q (%v) not its own", n, subject, err)
				}
				seen[subject] = true
				leaves, types := walk(t, m.Header, m.Body, 0)
				var lt []string
				for _, l := range leaves {
					lt = append(lt, l.ctype)
				}
				if strings.Join(types, " ") != tc.types || strings.Join(lt, " ") != tc.leaves {
					t.Fatalf("message %d: multiparts %v, leaves %v", n, types, lt)
				}
				if tc.shape == Plain {
					continue
				}
				name := personFor(n).name
				if !strings.Contains(subject, name) || !strings.Contains(string(leaves[0].body), name) ||
					!strings.Contains(string(leaves[1].body), "<b>"+name+"</b>") || !strings.Contains(string(leaves[1].body), "</html>") {
					t.Fatalf("message %d is not personalised for %q:\n%s", n, name, raw)
				}
				if tc.attachment > 0 {
					pdf := leaves[2]
					if len(pdf.body) != tc.attachment || !bytes.Equal(pdf.body, FakePDF(PDFSize)) || !strings.HasSuffix(pdf.filename, ".pdf") {
						t.Fatalf("message %d: attachment %q of %d bytes", n, pdf.filename, len(pdf.body))
					}
				}
			}
		})
	}
	if _, err := NewGenerator("docx", 0); err == nil {
		t.Fatal("an unknown shape was accepted")
	}
}

// FakePDF is the size asked, the same every time, and a PDF a reader can
// find its objects in: the cross-reference offsets point at them.
func TestFakePDF(t *testing.T) {
	for _, size := range []int{4 << 10, PDFSize, 1 << 20} {
		b := FakePDF(size)
		if len(b) != size || !bytes.Equal(b, FakePDF(size)) {
			t.Fatalf("size %d: %d bytes", size, len(b))
		}
		if !bytes.HasPrefix(b, []byte("%PDF-1.4\n")) || !bytes.HasSuffix(b, []byte("%%EOF\n")) {
			t.Fatalf("size %d: not framed as a PDF", size)
		}
		m := regexp.MustCompile(`startxref\n(\d+)\n`).FindSubmatch(b)
		if m == nil {
			t.Fatal("no startxref")
		}
		x, _ := strconv.Atoi(string(m[1]))
		if !bytes.HasPrefix(b[x:], []byte("xref\n0 8\n")) {
			t.Fatalf("startxref %d points at %q", x, b[x:x+10])
		}
		for i, l := range strings.Split(string(b[x:]), "\n")[3:10] {
			off, _ := strconv.Atoi(l[:10])
			if want := fmt.Sprintf("%d 0 obj\n", i+1); !bytes.HasPrefix(b[off:], []byte(want)) {
				t.Fatalf("object %d at %d: %q", i+1, off, b[off:off+10])
			}
		}
	}
}

func TestBody(t *testing.T) {
	for _, size := range []int{0, 300, 5120, 64 << 10} {
		b := string(Body("a@servir.gob.pe", "b@example.org", 7, size))
		if !strings.HasPrefix(b, "From: <a@servir.gob.pe>\r\nTo: <b@example.org>\r\nSubject: carga 7\r\n") || !strings.HasSuffix(b, "\r\n") {
			t.Fatalf("size %d: %q", size, b)
		}
		if min := size - 60; len(b) < min || (len(b) > size && strings.Contains(b, "Lorem")) {
			t.Errorf("size %d: body of %d bytes", size, len(b))
		}
	}
}
