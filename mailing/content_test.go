package mailing

import (
	"bytes"
	"regexp"
	"testing"
	"time"
)

// A message rebuilt from the same recipient is byte-identical (its MIME
// boundaries come from the recipient's seed), each multipart part has its
// own boundary, and another recipient's message has other boundaries.
func TestBuildBoundaries(t *testing.T) {
	text, html := "Hola", "<p>Hola</p>"
	p := part{from: Address{Addr: "avisos@servir.gob.pe"}, to: []Address{{Addr: "ana@example.com"}}, subject: "s",
		text: &text, html: &html, attach: []Attachment{{Filename: "a.txt", ContentType: "text/plain", Data: []byte("x")}},
		date: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), msgID: "id@envios.invalid", boundary: 42}
	a, err := build(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := build(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("two builds differ:\n%s\n---\n%s", a, b)
	}
	re := regexp.MustCompile(`boundary="?(envios-[0-9a-f]{32})`)
	first := re.FindAllSubmatch(a, -1)
	if len(first) != 2 || bytes.Equal(first[0][1], first[1][1]) {
		t.Fatalf("want two distinct boundaries (mixed, alternative), got %q in\n%s", first, a)
	}
	p.boundary = 43
	c, err := build(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range re.FindAllSubmatch(c, -1) {
		if bytes.Contains(a, m[1]) {
			t.Fatalf("boundary %s of another recipient's message reused", m[1])
		}
	}
}
