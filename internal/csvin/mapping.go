package csvin

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// Mapping says which columns hold what.
type Mapping struct {
	Address int            // column index of the e-mail address (required)
	Name    int            // column of the name, -1 if none
	Attrs   map[string]int // every other non-empty-named column: attribute name (the header text) → index
}

// Column names recognised without a spec, as squeeze(fold(name)) gives
// them, as space-separated lists.
const (
	addressNames = "email mail correo correoelectronico emailaddress direcciondecorreo"
	// singleNames hold a whole name; givenNames may hold the given names only.
	singleNames  = "name nombre nombrecompleto fullname"
	givenNames   = "nombres"
	surnameNames = "apellidos apellido"
)

// Map builds the mapping from the header and an optional override spec
// "email=Correo,name=Nombre" (keys: email (or address), name; values:
// header names, compared case- and accent-insensitively and trimmed; a
// header name holding a comma cannot be given).
//
// Without an override, the address column is the first header matching
// (case- and accent-insensitive, trimmed, ignoring "-", "_", " " and "."):
// email, e-mail, mail, correo, correo electronico, correo electrónico,
// email address, direccion de correo, e-mail address; the name column is
// the first matching name, nombre, nombres, nombre completo, full name,
// except that "nombres" (given names) gives way to a single name column
// when "apellidos" exists too; "apellidos" stays an attribute. A column
// mapped by the spec is not detected for the other role.
//
// Every other column with a name is an attribute under its trimmed header
// text; of two names equal case- and accent-insensitively, the second is
// named with a suffix " (2)", the third " (3)", and so on; a spec may name
// the suffixed column. The errors name the problem, in English, for a
// person to read: no address column found, a spec naming a column that
// does not exist, an unknown key, a key given twice, or one column mapped
// twice.
func Map(header []string, spec string) (Mapping, error) {
	names, folds := uniqueNames(header)
	m := Mapping{Address: -1, Name: -1, Attrs: make(map[string]int)}
	if err := m.override(names, folds, spec); err != nil {
		return Mapping{}, err
	}
	keys := make([]string, len(header))
	for i, h := range header {
		keys[i] = squeeze(fold(trimName(h)))
	}
	taken := func(i int) bool { return i == m.Address || i == m.Name }
	if m.Address < 0 {
		m.Address = find(keys, addressNames, taken)
		if m.Address < 0 {
			return Mapping{}, fmt.Errorf("no column holds the e-mail address: map one with --map email=COLUMN (columns: %s)", list(names))
		}
	}
	if m.Name < 0 {
		m.Name = find(keys, singleNames+" "+givenNames, taken)
		if m.Name >= 0 && keys[m.Name] == givenNames && find(keys, surnameNames, taken) >= 0 {
			if single := find(keys, singleNames, taken); single >= 0 {
				m.Name = single
			}
		}
	}
	for i, n := range names {
		if n != "" && !taken(i) {
			m.Attrs[n] = i
		}
	}
	return m, nil
}

// override applies the spec to m.
func (m *Mapping) override(names, folds []string, spec string) error {
	given := map[*int]string{}
	for part := range strings.SplitSeq(spec, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		key, value, ok := strings.Cut(part, "=")
		if !ok {
			return fmt.Errorf("--map: %q is not KEY=COLUMN", part)
		}
		key, value = strings.ToLower(strings.TrimSpace(key)), trimName(value)
		var dst *int
		switch key {
		case "email", "address":
			dst = &m.Address
		case "name":
			dst = &m.Name
		default:
			return fmt.Errorf("--map: unknown key %q in %q (keys: email, name)", key, part)
		}
		if prev, dup := given[dst]; dup {
			return fmt.Errorf("--map: %q: %s= was already given", part, prev)
		}
		given[dst] = key
		*dst = slices.Index(folds, fold(value))
		if *dst < 0 || value == "" {
			return fmt.Errorf("--map %s=%s: no column is named %q (columns: %s)", key, value, value, list(names))
		}
	}
	if m.Address >= 0 && m.Address == m.Name {
		return fmt.Errorf("--map: column %q is mapped twice (%s and %s)", names[m.Address], given[&m.Address], given[&m.Name])
	}
	return nil
}

// uniqueNames trims the header names and suffixes the later ones of names
// that fold alike with " (2)", " (3)"…; folds are the results folded.
func uniqueNames(header []string) (names, folds []string) {
	names, folds = make([]string, len(header)), make([]string, len(header))
	seen := make(map[string]bool, len(header))
	next := make(map[string]int)
	for i, h := range header {
		n := trimName(h)
		if n == "" {
			continue
		}
		f := fold(n)
		if seen[f] {
			base := f
			for k := max(next[base], 2); ; k++ {
				cand := n + " (" + strconv.Itoa(k) + ")"
				if cf := fold(cand); !seen[cf] {
					n, f, next[base] = cand, cf, k+1
					break
				}
			}
		}
		seen[f] = true
		names[i], folds[i] = n, f
	}
	return names, folds
}

// find is the index of the first key that is a word of want and not
// taken, or -1.
func find(keys []string, want string, taken func(int) bool) int {
	words := strings.Fields(want)
	for i, k := range keys {
		if !taken(i) && slices.Contains(words, k) {
			return i
		}
	}
	return -1
}

// fold lowercases s and drops its accents: "Electrónico" → "electronico".
func fold(s string) string {
	var b strings.Builder
	for _, r := range norm.NFD.String(s) {
		if !unicode.Is(unicode.Mn, r) {
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return norm.NFC.String(b.String())
}

// squeeze drops the characters a column name match ignores.
func squeeze(s string) string {
	return strings.Map(func(r rune) rune {
		if strings.ContainsRune("-_ .", r) {
			return -1
		}
		return r
	}, s)
}

// list joins the named columns for an error message.
func list(names []string) string {
	var named []string
	for _, n := range names {
		if n != "" {
			named = append(named, n)
		}
	}
	if len(named) == 0 {
		return "none"
	}
	return strings.Join(named, ", ")
}
