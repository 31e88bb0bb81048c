package contacts

import (
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzCSV reads arbitrary bytes as a contacts file: no panic, rows in
// line order, every field valid UTF-8 (whatever the encoding), raw texts
// bounded, and reading ends.
func FuzzCSV(f *testing.F) {
	for _, s := range []string{
		"\ufeffEmail,Nombre\nana@example.org,Ana\n",
		win1252ForFuzz,
		"correo;nombre\r\n\"a;b\"\"c\";\"x\ny\"\r\n",
		"email|name\rana@x.org|Ana\r",
		"\xff\xfee\x00m\x00a\x00i\x00l\x00\n\x00",
		"email\n\"unterminated\n",
		"email,name\n\"bad\"quote,x\nok@x.org,y\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := openCSV(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		for _, h := range c.header {
			if !utf8.ValidString(h) {
				t.Fatalf("header %q is not UTF-8", h)
			}
		}
		last := 0
		for i := 0; i <= len(b)+1; i++ {
			rec, err := c.next()
			if errors.Is(err, io.EOF) {
				return
			}
			var re *rowError
			if errors.As(err, &re) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if rec.line < last || len(rec.raw) > 1000 {
				t.Fatalf("line %d after %d, raw %d bytes", rec.line, last, len(rec.raw))
			}
			last = rec.line
			for _, x := range rec.fields {
				if !utf8.ValidString(x) {
					t.Fatalf("field %q is not UTF-8", x)
				}
			}
		}
		t.Fatalf("more rows than bytes: the reader does not end")
	})
}

const win1252ForFuzz = "correo;nombre\r\npena@example.org;Pe\xf1a\r\n"

// The mapping finds the usual headers and names what is missing.
func TestMapColumns(t *testing.T) {
	for _, tt := range []struct {
		header        []string
		spec          string
		address, name int
		attrs, err    string
	}{
		{[]string{"Correo Electrónico", "Nombres", "Apellidos"}, "", 0, 1, "Apellidos", ""},
		{[]string{"DNI", "E-mail", "Nombre completo"}, "", 1, 2, "DNI", ""},
		{[]string{"Contacto", "Nombre"}, "email=contacto", 0, 1, "", ""},
		{[]string{"Contacto", "Nombre"}, "", -1, -1, "", "no column holds the e-mail address"},
		{[]string{"Contacto"}, "email=Correo", -1, -1, "", `the file has no column "Correo"`},
		{[]string{"Contacto"}, "telefono=Contacto", -1, -1, "", `"telefono" is not email or name`},
		{[]string{"Contacto"}, "email=Contacto,name=Contacto", -1, -1, "", "mapped twice"},
		{[]string{"email", "ciudad", "ciudad"}, "", 0, -1, "ciudad,ciudad (2)", ""},
	} {
		m, err := mapColumns(tt.header, tt.spec)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%v %q: %v, want %q", tt.header, tt.spec, err, tt.err)
			}
			continue
		}
		var attrs []string
		for k := range m.attrs {
			attrs = append(attrs, k)
		}
		if err != nil || m.address != tt.address || m.name != tt.name || strings.Join(sortStrings(attrs), ",") != tt.attrs {
			t.Errorf("%v %q: %+v %v", tt.header, tt.spec, m, err)
		}
	}
}

func sortStrings(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}
