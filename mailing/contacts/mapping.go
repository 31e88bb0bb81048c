package contacts

import (
	"fmt"
	"strings"

	"unicode"

	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"
)

// mapping says which columns of a file hold what.
type mapping struct {
	address int
	name    int            // -1: none
	attrs   map[string]int // the other named columns: attribute → index
}

// fold is a header name compared: lower case, accents, spaces, "-", "_"
// and "." removed ("Correo Electrónico" = "correoelectronico").
func fold(s string) string {
	t := transform.Chain(norm.NFD, runes.Remove(runes.In(unicode.Mn)), norm.NFC)
	out, _, err := transform.String(t, strings.ToLower(strings.TrimSpace(s)))
	if err != nil {
		out = strings.ToLower(s)
	}
	return strings.NewReplacer(" ", "", "-", "", "_", "", ".", "").Replace(out)
}

var (
	addressNames = []string{"email", "mail", "correo", "correoelectronico", "emailaddress", "direcciondecorreo", "direcciondecorreoelectronico"}
	nameNames    = []string{"name", "nombre", "nombrecompleto", "fullname", "nombres", "nombreyapellidos", "nombresyapellidos"}
)

// mapColumns maps the header, with the overrides of spec
// ("email=Correo,name=Nombre").
func mapColumns(header []string, spec string) (mapping, error) {
	m := mapping{address: -1, name: -1, attrs: map[string]int{}}
	find := func(name string) int {
		for i, h := range header {
			if fold(h) == fold(name) {
				return i
			}
		}
		return -1
	}
	if strings.TrimSpace(spec) != "" {
		for _, kv := range strings.Split(spec, ",") {
			k, v, ok := strings.Cut(kv, "=")
			k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
			if !ok || v == "" {
				return m, fmt.Errorf("--map %q: each entry is KEY=COLUMN (email=Correo,name=Nombre)", spec)
			}
			i := find(v)
			if i < 0 {
				return m, fmt.Errorf("--map: the file has no column %q (columns: %s)", v, strings.Join(header, ", "))
			}
			switch k {
			case "email", "address":
				m.address = i
			case "name":
				m.name = i
			default:
				return m, fmt.Errorf("--map: %q is not email or name", k)
			}
		}
		if m.address >= 0 && m.address == m.name {
			return m, fmt.Errorf("--map: column %q is mapped twice", header[m.address])
		}
	}
	pick := func(names []string, taken int) int {
		for _, n := range names {
			for i, h := range header {
				if i != taken && fold(h) == n {
					return i
				}
			}
		}
		return -1
	}
	if m.address < 0 {
		m.address = pick(addressNames, m.name)
	}
	if m.address < 0 {
		return m, fmt.Errorf("no column holds the e-mail address: map one with --map email=COLUMN (columns: %s)", strings.Join(header, ", "))
	}
	if m.name < 0 {
		m.name = pick(nameNames, m.address)
	}
	for i, h := range header {
		if i == m.address || i == m.name || h == "" {
			continue
		}
		key := h
		for n := 2; ; n++ {
			if _, dup := m.attrs[key]; !dup {
				break
			}
			key = fmt.Sprintf("%s (%d)", h, n)
		}
		m.attrs[key] = i
	}
	return m, nil
}
