package mailing

import (
	"bufio"
	"bytes"
	"context"
	"testing"

	"github.com/jhillyerd/enmime/v2"
)

// FuzzStructure: the walk never claims more than enmime does (and
// bodyClean, checkBody's fast path, refuses no clean body). Whatever
// the message (its lines made CRLF and its NULs dropped, as Submit only
// sees such messages), when contentType reads a header, enmime's
// ReadHeader reads it too and finds the same Content-Type; when
// structureProved proves a message, enmime reads it without error; and
// neither writes into the message. Seeds: testdata/fuzz/FuzzStructure and
// the cases of TestStructure.
func FuzzStructure(f *testing.F) {
	for _, s := range []string{
		"From: a@b.pe\n\nHola\n",
		"Content-Type: multipart/alternative; boundary=b1\n\n--b1\nContent-Type: text/plain\n\nHola\n--b1\nContent-Type: text/html\n\n<p>Hola</p>\n--b1--\n",
		"Content-Type: multipart/mixed;\n boundary=\"m m\"\n\npreamble\n--m m\nContent-Type: multipart/alternative; boundary=a\n\n--a\n\nx\n--a--\n--m m\n\n--m m--\nepilogue\n",
		"Content-Type: multipart/mixed; boundary=m\n\n--m\n--m\nContent-Type: text/plain\n--m--",
		"Content-Type: multipart/mixed; boundary=m\n\n--m\nHola\n--m--\n",
		"Content-Type: multipart/mixed; boundary=m\n\n--m\n\nuno --m dos\n--m--\n",
		"Content-Type: multipart/mixed; boundary=m\n\n--m\nContent-Type: application/zip; boundary=z\n\n--z\n\nx\n--z--\n--m--\n",
		"Content-Type: multipart/mixed\n\n--\n\nx\n----\n",
		"Content-Type: text/plain; boundary=x\n\n--x\n",
		"content-type:\n \n\tmultipart/related;\n\ttype=\"text/html\"; boundary=r\n\n--r\n\n--r--\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		if !bodyClean(msg) && checkBody(msg) == nil {
			t.Fatalf("bodyClean refused a clean body: %q", msg)
		}
		msg = crlfOnly(msg)
		if !bodyClean(msg) {
			t.Fatalf("bodyClean refused %q", msg)
		}
		in := bytes.Clone(msg)
		end := headerEnd(msg)
		if v, ok := contentType(msg[:end]); ok {
			h, err := enmime.ReadHeader(bufio.NewReader(bytes.NewReader(msg[:end])), ignoreErrors{})
			if err != nil || h.Get("Content-Type") != v {
				t.Fatalf("contentType read %q; enmime %q, %v", v, h.Get("Content-Type"), err)
			}
		}
		if structureProved(msg) {
			if err := parseMIME(context.Background(), msg); err != nil {
				t.Fatalf("proved, but enmime refuses it: %v\n%q", err, msg)
			}
		}
		if !bytes.Equal(msg, in) {
			t.Fatalf("the message was written into: %q became %q", in, msg)
		}
	})
}

// crlfOnly is b with every line ending CRLF and without NUL: the messages
// Submit's checks leave (splitHeader, checkBody).
func crlfOnly(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	b = bytes.ReplaceAll(b, []byte("\r"), nil)
	b = bytes.ReplaceAll(b, []byte("\x00"), nil)
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}
