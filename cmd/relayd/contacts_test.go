package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
)

// contactsTranscript is a platform user's session with lists and imports,
// run on each engine and compared with testdata/contacts.golden. $TMP
// holds the files.
var contactsTranscript = []string{
	`db migrate`,
	`quota init --from ../../examples/servir/pool.yaml`,
	`list ls`,
	`list create boletin --account enap/eventos --description "Boletín mensual"`,
	`list create boletin --account enap/eventos`,
	`list create boletin --account nadie`,
	`list create boletin`,
	`contacts import $TMP/participantes.csv --account enap/eventos --list boletin --dry-run`,
	`contacts import $TMP/participantes.csv --account enap/eventos --list boletin`,
	`contacts import $TMP/participantes.csv --account enap/eventos --list boletin`,
	`contacts import $TMP/participantes.csv --account enap/eventos --list boletin --mode update --json`,
	`contacts rejects 2`,
	`contacts import $TMP/bajas.csv --account enap/eventos --list boletin --mode unsubscribe`,
	`contacts import $TMP/participantes.csv --account enap/eventos --list otra`,
	`contacts import $TMP/participantes.csv --account enap/eventos --list boletin --mode borrar`,
	`contacts import $TMP/sin-correo.csv --account enap/eventos --list boletin`,
	`contacts import $TMP/sin-correo.csv --account enap/eventos --list boletin --map email=Contacto`,
	`contacts import $TMP/no-existe.csv --account enap/eventos --list boletin`,
	`contacts rejects 99`,
	`contacts delete ana@example.org --account enap/eventos`,
	`contacts delete Ana@Example.org --account enap/eventos --why "solicitud 2026-77"`,
	`list ls --account enap/eventos`,
}

var contactsFiles = map[string]string{
	"participantes.csv": "Correo;Nombre;Dependencia\r\nana@example.org;Ana Quispe;Lima\r\nLUIS@example.org;Luis Mamani;Cusco\r\n" +
		"luis@example.org;Luis otra vez;Cusco\r\nno-es-correo;X;Y\r\n;;\r\n",
	"bajas.csv":      "email\nluis@example.org\nnadie@example.org\n",
	"sin-correo.csv": "Contacto,Nombre\neva@example.org,Eva\n",
}

func TestContactsTranscript(t *testing.T) {
	for _, eng := range storetest.Engines {
		t.Run(string(eng), func(t *testing.T) {
			dsn := storetest.DSN(t, eng)
			tmp := t.TempDir()
			for name, body := range contactsFiles {
				if err := os.WriteFile(filepath.Join(tmp, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			for _, line := range contactsTranscript {
				fmt.Fprintf(&out, "$ relayd %s\n", line)
				code, stdout, stderr := runLine(t, dsn, strings.ReplaceAll(line, "$TMP", tmp))
				out.WriteString(strings.ReplaceAll(stdout+stderr, tmp, "$TMP"))
				if code != 0 {
					fmt.Fprintf(&out, "[exit %d]\n", code)
				}
				out.WriteString("\n")
			}
			golden(t, "contacts.golden", out.String(), eng == store.SQLite)
		})
	}
}
