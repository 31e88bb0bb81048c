package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
)

// suppressionTranscript is an admin session with the suppression list, run
// on each engine and compared with testdata/suppression.golden. $TMP is a
// directory holding the import files (lista.csv, plain.txt); "cat FILE"
// prints a file. Every failing step must leave the database as it was.
var suppressionTranscript = []string{
	`suppression --help`,
	`suppression add --help`,
	`suppression list`,
	`db migrate`,
	`quota init --from ../../examples/servir/pool.yaml`,
	`suppression list`,
	`suppression add ana@example.org --why "pidió por mesa de partes"`,
	`suppression add ANA@example.org --why "otra vez"`,
	`suppression add "Luis <Luis@Example.org>" --account enap/eventos --topic boletin --reason unsubscribe --why "llamó a la central"`,
	`suppression add luis@example.org --reason unsubscribe --account enap/biblioteca --why "formulario web"`,
	`suppression add quejas@example.org --reason complaint --why "reporte ARF reenviado por el proveedor"`,
	`suppression add temp@example.org --expires 30d --why "buzón lleno"`,
	`suppression add fecha@example.org --expires 2026-12-31 --reason hard_bounce --why "rebote antes de la migración"`,
	`suppression add x@example.org --expires 2020-01-01 --why pasado`,
	`suppression add x@example.org --expires pronto --why w`,
	`suppression add x@example.org`,
	`suppression add not-an-address --why w`,
	`suppression add x@example.org --reason soft_streak --why w`,
	`suppression add x@example.org --scope world --why w`,
	`suppression add x@example.org --scope account --why w`,
	`suppression add x@example.org --reason unsubscribe --why w`,
	`suppression add x@example.org --account enap/nadie --why w`,
	`suppression add x@example.org --account Nadie --why w`,
	`suppression add x@example.org --topic boletin --why w`,
	`suppression add x@example.org --scope bulk --account enap/eventos --why w`,
	`suppression add`,
	`suppression list`,
	`suppression list --reason unsubscribe --json`,
	`suppression list --limit 2`,
	`suppression list --limit 2 --after 2`,
	`suppression list --reason bogus`,
	`suppression list --limit 0`,
	`suppression check ana@example.org`,
	`suppression check luis@example.org`,
	`suppression check luis@example.org --bulk --account enap/eventos --topic boletin`,
	`suppression check luis@example.org --bulk --account enap/eventos --topic otro`,
	`suppression check quejas@example.org --bulk --json`,
	`suppression check quejas@example.org`,
	`suppression check nope`,
	`suppression check nadie@example.org --account enap/nadie`,
	`suppression remove ana@example.org --why "error de digitación"`,
	`suppression remove ana@example.org --why "otra vez"`,
	`suppression remove luis@example.org --id 999 --why x`,
	`suppression remove luis@example.org`,
	`suppression remove luis@example.org --id 3 --why "volvió a suscribirse"`,
	`suppression check ana@example.org`,
	`suppression list --active`,
	`suppression list --address ANA@example.org`,
	`suppression import $TMP/missing.csv --why x`,
	`suppression import $TMP/lista.csv`,
	`suppression import $TMP/lista.csv --reason soft_streak --why x`,
	`suppression import $TMP/lista.csv --why "padrón 2026"`,
	`suppression import $TMP/lista.csv --why "padrón 2026"`,
	`suppression import $TMP/plain.txt --account enap/eventos --why "bajas del formulario web"`,
	`suppression export`,
	`suppression export --format jsonl -o $TMP/out.jsonl`,
	`cat $TMP/out.jsonl`,
	`suppression export --format xml`,
	`suppression export -o $TMP/no/such/dir/out.csv`,
	// Last: a rolled-back transaction uses up PostgreSQL ids, not SQLite's.
	`suppression import $TMP/dry.txt --why "prueba" --dry-run`,
	`suppression list --address nuevo@example.org`,
	`suppression frobnicate`,
}

// The import files: a CSV export with a header, quoting, a formula-like
// address, a bad address, a duplicate, a blank line, a broken quote and an
// overlong line; a plain list; and a dry run's list.
var importFiles = map[string]string{
	"lista.csv": "\ufeffcorreo,nombre,area\r\n" +
		"maria@example.org,María,ENAP\r\n" +
		"\"pedro@example.org\",\"Pedro, Jr.\",SJTI\r\n" +
		"=cmd@example.org,Fórmula,X\r\n" +
		"not-an-address,Sin,correo\r\n" +
		"MARIA@example.org,duplicada,ENAP\r\n" +
		"\r\n" +
		"ana@example.org,quitada antes,\r\n" +
		"\"broken,quote\r\n" +
		strings.Repeat("x", 5000) + "@example.org,largo\r\n" +
		"tres@example\r\n",
	"plain.txt": "uno@example.org\nDos <dos@example.org>\n  tres@example.org  \nuno@example.org",
	"dry.txt":   "nuevo@example.org\nnuevo@example.org\nmaria@example.org\nmal\n",
}

func TestSuppressionTranscript(t *testing.T) {
	for _, eng := range storetest.Engines {
		t.Run(string(eng), func(t *testing.T) {
			dsn := storetest.DSN(t, eng)
			tmp := t.TempDir()
			for name, body := range importFiles {
				if err := os.WriteFile(filepath.Join(tmp, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			for _, line := range suppressionTranscript {
				real := strings.ReplaceAll(line, "$TMP", tmp)
				if file, ok := strings.CutPrefix(real, "cat "); ok {
					fmt.Fprintf(&out, "$ %s\n", line)
					b, err := os.ReadFile(file)
					if err != nil {
						t.Fatal(err)
					}
					out.Write(b)
					out.WriteString("\n")
					continue
				}
				fmt.Fprintf(&out, "$ relayd %s\n", line)
				before := suppressionDump(t, dsn)
				code, stdout, stderr := runLine(t, dsn, real)
				out.WriteString(strings.ReplaceAll(stdout+stderr, tmp, "$TMP"))
				if code != 0 {
					fmt.Fprintf(&out, "[exit %d]\n", code)
					if after := suppressionDump(t, dsn); after != before {
						t.Errorf("failing command %q changed the database:\nbefore %s\nafter  %s", line, before, after)
					}
					if n := strings.Count(stderr, "\n"); n != 1 {
						t.Errorf("%q: error should be one line, got %d: %q", line, n, stderr)
					}
				}
				if strings.Contains(line, "--dry-run") {
					if after := suppressionDump(t, dsn); after != before {
						t.Errorf("a dry run changed the database:\nbefore %s\nafter  %s", before, after)
					}
				}
				out.WriteString("\n")
			}
			golden(t, "suppression.golden", out.String(), eng == store.SQLite)
			if entries, _ := filepath.Glob(filepath.Join(tmp, ".*.partial")); len(entries) > 0 {
				t.Errorf("partial export files left: %v", entries)
			}
		})
	}
}

// suppressionDump is dump with the suppression list: its rows, how many
// are removed, and what its audit log holds.
func suppressionDump(t *testing.T, dsn string) string {
	t.Helper()
	s := dump(t, dsn)
	db, err := store.Open(context.Background(), store.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	if err := db.NewRaw("SELECT count(*) || ':' || count(removed_at) FROM mail_suppressions").Scan(context.Background(), &v); err != nil {
		return s + "[no mail_suppressions]"
	}
	return s + v
}

// Import and export go a chunk and a page at a time: across their
// boundaries nothing is lost or repeated, and the counts add up.
func TestSuppressionImportExportPages(t *testing.T) {
	for _, eng := range storetest.Engines {
		t.Run(string(eng), func(t *testing.T) {
			dsn := storetest.DSN(t, eng)
			tmp := t.TempDir()
			const n = 2*importChunk + 500
			var b strings.Builder
			for i := range n {
				fmt.Fprintf(&b, "persona%04d@example.org\n", i%(n-10)) // the last 10 lines repeat the first 10
			}
			list := filepath.Join(tmp, "list.txt")
			if err := os.WriteFile(list, []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, line := range []string{"db migrate", "suppression import " + list + " --why carga"} {
				if code, stdout, stderr := runLine(t, dsn, line); code != 0 {
					t.Fatalf("%s: exit %d\n%s%s", line, code, stdout, stderr)
				} else if strings.HasPrefix(line, "suppression") && !strings.Contains(stdout, fmt.Sprintf("read %s addresses: %s added, 10 already suppressed, 0 rejected", group(n), group(n-10))) {
					t.Fatalf("import: %s", stdout)
				}
			}
			out := filepath.Join(tmp, "out.csv")
			if code, stdout, stderr := runLine(t, dsn, "suppression export -o "+out); code != 0 || !strings.Contains(stdout, "exported "+group(n-10)+" suppressions") {
				t.Fatalf("export: exit %d\n%s%s", code, stdout, stderr)
			}
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			seen := map[string]bool{}
			for i, l := range lines[1:] {
				cells := strings.Split(l, ",")
				if cells[0] != fmt.Sprint(i+1) || seen[cells[1]] {
					t.Fatalf("row %d: %q (ids in order, each address once)", i+1, l)
				}
				seen[cells[1]] = true
			}
			if len(seen) != n-10 {
				t.Fatalf("exported %d addresses, want %d", len(seen), n-10)
			}
		})
	}
}
