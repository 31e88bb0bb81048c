package csvin_test

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/servir-pe/envios/internal/csvin"
)

// A Windows-1252 list saved by Excel with ';', with a malformed row.
func Example() {
	file := "Nombres;Apellidos;Correo electr\xf3nico\r\n" +
		"Ana;Pe\xf1a;ana@example.pe\r\n" +
		"Luis \"Lucho\";N\xfa\xf1ez;luis@example.pe\r\n" +
		";;\r\n" +
		"Rosa;Quispe;rosa@example.pe\r\n"
	r, err := csvin.NewReader(strings.NewReader(file))
	if err != nil {
		fmt.Println(err)
		return
	}
	m, err := csvin.Map(r.Header(), "")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s %q %q\n", r.Encoding(), r.Delimiter(), r.Header())
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		var rowErr *csvin.RowError
		if errors.As(err, &rowErr) {
			fmt.Printf("rejected: %v: %s\n", err, rowErr.Raw)
			continue
		}
		fmt.Printf("line %d: %s <%s> apellidos=%s\n", rec.Line, rec.Fields[m.Name], rec.Fields[m.Address], rec.Fields[m.Attrs["Apellidos"]])
	}
	// Output:
	// windows-1252 ';' ["Nombres" "Apellidos" "Correo electrónico"]
	// line 2: Ana <ana@example.pe> apellidos=Peña
	// rejected: line 3: bare " in non-quoted-field: Luis "Lucho";Núñez;luis@example.pe
	// line 5: Rosa <rosa@example.pe> apellidos=Quispe
}

func ExampleMap() {
	header := []string{"Correo", "Correo Personal", "Nombre", "Ciudad"}
	m, err := csvin.Map(header, "email=correo personal")
	fmt.Println(m.Address, m.Name, m.Attrs, err)
	_, err = csvin.Map([]string{"DNI", "Teléfono"}, "")
	fmt.Println(err)
	// Output:
	// 1 2 map[Ciudad:3 Correo:0] <nil>
	// no column holds the e-mail address: map one with --map email=COLUMN (columns: DNI, Teléfono)
}
