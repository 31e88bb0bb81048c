package xlsxin_test

import (
	"errors"
	"fmt"
	"io"

	"github.com/xuri/excelize/v2"

	"github.com/servir-pe/envios/internal/csvin"
	"github.com/servir-pe/envios/internal/xlsxin"
)

// A staff list saved from Excel, with a title cell left blank, a blank
// row and a number column, read and mapped as a CSV file would be.
func Example() {
	f := excelize.NewFile()
	for cell, v := range map[string]any{
		"A2": "Correo electrónico", "B2": "Nombres", "C2": "Apellidos", "D2": "DNI",
		"A3": "ana@example.pe", "B3": "Ana", "C3": "Peña", "D3": 12345678,
		"A5": "luis@example.pe", "B5": "Luis", "C5": "Núñez",
	} {
		if err := f.SetCellValue("Sheet1", cell, v); err != nil {
			fmt.Println(err)
			return
		}
	}
	file, err := f.WriteToBuffer()
	if err != nil {
		fmt.Println(err)
		return
	}
	r, err := xlsxin.NewReader(file, xlsxin.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	m, err := csvin.Map(r.Header(), "")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s %q\n", r.Sheet(), r.Header())
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("row %d: %s <%s> apellidos=%s dni=%q (raw %s)\n", rec.Line, rec.Fields[m.Name], rec.Fields[m.Address],
			rec.Fields[m.Attrs["Apellidos"]], rec.Fields[m.Attrs["DNI"]], rec.Raw)
	}
	// Output:
	// Sheet1 ["Correo electrónico" "Nombres" "Apellidos" "DNI"]
	// row 3: Ana <ana@example.pe> apellidos=Peña dni="12345678" (raw ana@example.pe,Ana,Peña,12345678)
	// row 5: Luis <luis@example.pe> apellidos=Núñez dni="" (raw luis@example.pe,Luis,Núñez,)
}
