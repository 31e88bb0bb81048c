package main

import (
	"bytes"
	"os"
	"testing"
)

func TestProgressWriterAndTerminal(t *testing.T) {
	var out bytes.Buffer
	p := &progressWriter{w: &out}
	for _, s := range []string{"id,address\n1,a@x\n", "2,b", "@x\n"} {
		if _, err := p.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if p.rows.Load() != 3 || p.bytes.Load() != int64(out.Len()) || out.String() != "id,address\n1,a@x\n2,b@x\n" {
		t.Fatalf("rows %d bytes %d %q", p.rows.Load(), p.bytes.Load(), out.String())
	}
	if terminal(&out) != nil {
		t.Fatal("a buffer is not a terminal")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if terminal(w) != nil {
		t.Fatal("a pipe is not a terminal: no progress lines in it")
	}
}
