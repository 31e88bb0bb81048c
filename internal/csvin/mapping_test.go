package csvin

import (
	"maps"
	"strings"
	"testing"
)

type mapCase struct {
	name    string
	header  []string
	spec    string
	address int
	nameCol int
	attrs   map[string]int
	err     string // the exact message, or "" for success
}

func mapCases() []mapCase {
	return []mapCase{
		{name: "Correo Electrónico", header: []string{"Nombre", "Correo Electrónico", "Ciudad"},
			address: 1, nameCol: 0, attrs: map[string]int{"Ciudad": 2}},
		{name: "E-mail and Full Name", header: []string{"E-mail", "Full Name"}, address: 0, nameCol: 1, attrs: map[string]int{}},
		{name: "EMAIL alone", header: []string{"EMAIL"}, address: 0, nameCol: -1, attrs: map[string]int{}},
		{name: "correo, trimmed", header: []string{"  correo ", "DNI"}, address: 0, nameCol: -1, attrs: map[string]int{"DNI": 1}},
		{name: "e_mail address and dirección de correo", header: []string{"Dirección de Correo", "e_mail address."},
			address: 0, nameCol: -1, attrs: map[string]int{"e_mail address.": 1}},
		{name: "Nombres and Apellidos", header: []string{"DNI", "Nombres", "Apellidos", "Correo"},
			address: 3, nameCol: 1, attrs: map[string]int{"DNI": 0, "Apellidos": 2}},
		{name: "a single name column beats Nombres beside Apellidos", header: []string{"Nombres", "Apellidos", "Nombre completo", "Correo"},
			address: 3, nameCol: 2, attrs: map[string]int{"Nombres": 0, "Apellidos": 1}},
		{name: "the first address column wins", header: []string{"Mail", "Correo"}, address: 0, nameCol: -1, attrs: map[string]int{"Correo": 1}},
		{name: "override", header: []string{"Correo", "Correo Personal", "Nombre", "Alias"}, spec: "email=Correo Personal,name=alias",
			address: 1, nameCol: 3, attrs: map[string]int{"Correo": 0, "Nombre": 2}},
		{name: "override, case, accents and spaces ignored", header: []string{"Correo electrónico", "Razón Social"}, spec: " EMAIL = CORREO ELECTRONICO , name=razon social,",
			address: 0, nameCol: 1, attrs: map[string]int{}},
		{name: "override with the address key", header: []string{"mail2", "x"}, spec: "address=MAIL2", address: 0, nameCol: -1, attrs: map[string]int{"x": 1}},
		{name: "override name, address detected elsewhere", header: []string{"Correo", "Email"}, spec: "name=correo",
			address: 1, nameCol: 0, attrs: map[string]int{}},
		{name: "duplicate names get a suffix", header: []string{"Correo", "Ciudad", "ciudad", "Ciudad", "", "Ciudad (2)"},
			address: 0, nameCol: -1, attrs: map[string]int{"Ciudad": 1, "ciudad (2)": 2, "Ciudad (3)": 3, "Ciudad (2) (2)": 5}},
		{name: "a suffixed duplicate can be mapped", header: []string{"Correo", "Correo"}, spec: "email=Correo (2)",
			address: 1, nameCol: -1, attrs: map[string]int{"Correo": 0}},

		{name: "no address column", header: []string{"Nombre", "Teléfono"},
			err: "no column holds the e-mail address: map one with --map email=COLUMN (columns: Nombre, Teléfono)"},
		{name: "no address column beside a mapped name", header: []string{"Correo"}, spec: "name=Correo",
			err: "no column holds the e-mail address: map one with --map email=COLUMN (columns: Correo)"},
		{name: "no header names", header: []string{"", " "}, err: "no column holds the e-mail address: map one with --map email=COLUMN (columns: none)"},
		{name: "override names a missing column", header: []string{"Correo", "Nombre"}, spec: "email=Mail",
			err: `--map email=Mail: no column is named "Mail" (columns: Correo, Nombre)`},
		{name: "override with an empty column", header: []string{"Correo", ""}, spec: "name=",
			err: `--map name=: no column is named "" (columns: Correo)`},
		{name: "unknown key", header: []string{"Correo"}, spec: "email=Correo,phone=Tel",
			err: `--map: unknown key "phone" in "phone=Tel" (keys: email, name)`},
		{name: "a column mapped twice", header: []string{"Correo", "Nombre"}, spec: "email=Correo,name=correo",
			err: `--map: column "Correo" is mapped twice (email and name)`},
		{name: "a key given twice", header: []string{"Correo", "Nombre"}, spec: "email=Correo,address=Nombre",
			err: `--map: "address=Nombre": email= was already given`},
		{name: "no equals sign", header: []string{"Correo"}, spec: "Correo",
			err: `--map: "Correo" is not KEY=COLUMN`},
	}
}

func TestMap(t *testing.T) {
	for _, tc := range mapCases() {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Map(tc.header, tc.spec)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("Map: %+v, %v\nwant error %s", m, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Address != tc.address || m.Name != tc.nameCol || !maps.Equal(m.Attrs, tc.attrs) {
				t.Fatalf("Map = %+v, want address %d, name %d, attrs %v", m, tc.address, tc.nameCol, tc.attrs)
			}
		})
	}
}

// FuzzMap: Map never panics, and a mapping it returns points into the
// header, each column at most once.
func FuzzMap(f *testing.F) {
	for _, tc := range mapCases() {
		f.Add(strings.Join(tc.header, "\x00"), tc.spec)
	}
	f.Fuzz(func(t *testing.T, header, spec string) {
		cols := strings.Split(header, "\x00")
		m, err := Map(cols, spec)
		if err != nil {
			if m.Attrs != nil {
				t.Fatalf("an error with a mapping: %+v", m)
			}
			return
		}
		used := map[int]bool{m.Address: true}
		if m.Address < 0 || m.Address >= len(cols) || m.Name < -1 || m.Name >= len(cols) || m.Name == m.Address {
			t.Fatalf("Map(%q, %q) = %+v", cols, spec, m)
		}
		used[m.Name] = true
		for name, i := range m.Attrs {
			if i < 0 || i >= len(cols) || used[i] || name == "" {
				t.Fatalf("Map(%q, %q) = %+v: attribute %q → %d", cols, spec, m, name, i)
			}
			used[i] = true
		}
	})
}
