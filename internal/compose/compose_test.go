package compose

import (
	"bytes"
	"regexp"
	"testing"
	"time"

	"github.com/servir-pe/envios/internal/address"
)

// A message rebuilt from the same recipient is byte-identical (its MIME
// boundaries come from the recipient's seed), each multipart part has its
// own boundary, and another recipient's message has other boundaries.
func TestBuildBoundaries(t *testing.T) {
	text, html := "Hola", "<p>Hola</p>"
	p := Part{From: address.Address{Addr: "avisos@servir.gob.pe"}, To: []address.Address{{Addr: "ana@example.com"}}, Subject: "s",
		Text: &text, HTML: &html, Attach: []Attachment{{Filename: "a.txt", ContentType: "text/plain", Data: []byte("x")}},
		Date: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), MsgID: "id@envios.invalid", Boundary: 42}
	a, err := Build(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(p)
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
	p.Boundary = 43
	c, err := Build(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range re.FindAllSubmatch(c, -1) {
		if bytes.Contains(a, m[1]) {
			t.Fatalf("boundary %s of another recipient's message reused", m[1])
		}
	}
}
