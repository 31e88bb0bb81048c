package contacts_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailingtest"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/internal/suppress"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/contacts"
)

func store(t testing.TB, db *bun.DB) *contacts.Store {
	t.Helper()
	e := mailingtest.Setup(t, db, map[string]int64{"enap/eventos": 100, "sjti/talento": 100}, mailing.Config{})
	s := &contacts.Store{DB: db, Now: e.Clock.Now}
	for _, a := range []string{"enap/eventos", "sjti/talento"} {
		if _, err := s.CreateList(context.Background(), a, "boletin", "", "test"); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// win1252 is "Peña" and "Núñez" as Excel saves them in Windows-1252.
var win1252 = "correo;nombre;cargo\r\npena@example.org;Pe\xf1a;Analista\r\nnunez@example.org;N\xfa\xf1ez;Jefe\r\n"

// The import edge cases, each file's counts and reject report (golden).
func TestImportFiles(t *testing.T) {
	files := []struct {
		name, body                                string
		read, added, updated, unchanged, rejected int64
	}{
		{"bom-utf8", "\ufeffEmail,Nombre,Ciudad\nana@example.org,Ana,Lima\nluis@example.org,Luis,Cusco\n", 2, 2, 0, 0, 0},
		{"windows-1252-semicolon", win1252, 2, 2, 0, 0, 0},
		{"quoted-newline", "correo,nombre,nota\n\"eva@example.org\",\"Eva\",\"línea uno\nlínea dos\"\nraul@example.org,Raúl,x\n", 2, 2, 0, 0, 0},
		{"duplicates-in-case", "email,name\nDup@Example.org,Dup\ndup@example.ORG,Dup otra vez\nDUP@EXAMPLE.ORG,Dup tercera\n", 3, 1, 0, 0, 2},
		{"invalid-and-empty", "email,name\nno-es-correo,X\n\n,,\n,Sin correo\nok@example.org,Ok\n\"bad\"quote@x.org,Y\nfin@example.org,Fin\n", 5, 2, 0, 0, 3},
		{"formula-name", "email,name\nf@example.org,\"=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"\n", 1, 1, 0, 0, 0},
	}
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		s := store(t, db)
		ctx := context.Background()
		var report strings.Builder
		for _, f := range files {
			im, err := s.Import(ctx, strings.NewReader(f.body), contacts.ImportOptions{Account: "enap/eventos", List: "boletin", FileName: f.name, Actor: "test"})
			if err != nil {
				t.Fatalf("%s: %v", f.name, err)
			}
			if im.Read != f.read || im.Added != f.added || im.Updated != f.updated || im.Unchanged != f.unchanged || im.Rejected != f.rejected {
				t.Errorf("%s: read %d added %d updated %d unchanged %d rejected %d; want %d %d %d %d %d", f.name, im.Read, im.Added, im.Updated,
					im.Unchanged, im.Rejected, f.read, f.added, f.updated, f.unchanged, f.rejected)
			}
			if im.Read != im.Added+im.Updated+im.Unchanged+im.Rejected {
				t.Errorf("%s: the counts do not add up: %+v", f.name, im)
			}
			fmt.Fprintf(&report, "== %s (%s, %q): read %d, added %d, rejected %d\n", f.name, im.Encoding, im.Delimiter, im.Read, im.Added, im.Rejected)
			for _, r := range im.Rejects {
				fmt.Fprintf(&report, "line %d: %s: %q\n", r.Line, r.Reason, r.Raw)
			}
			stored, err := s.Rejects(ctx, im.ID, 0, 0)
			if err != nil || len(stored) != len(im.Rejects) {
				t.Errorf("%s: stored rejects %v %v, want %d", f.name, stored, err, len(im.Rejects))
			}
		}
		var names string
		if err := db.NewRaw("SELECT name FROM contacts WHERE address = 'pena@example.org'").Scan(ctx, &names); err != nil || names != "Peña" {
			t.Errorf("Windows-1252 name %q, %v", names, err)
		}
		golden(t, "import-report.golden", report.String())
	})
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (UPDATE_GOLDEN=1 writes it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

// Importing again changes nothing; the suppression list, an unsubscribed
// membership and the contact's status always win; update, unsubscribe
// and blocklist do what they say; the counts add up each time.
func TestImportModes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		s := store(t, db)
		ctx := context.Background()
		imp := func(mode contacts.Mode, body string) contacts.Import {
			t.Helper()
			im, err := s.Import(ctx, strings.NewReader(body), contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Mode: mode, Actor: "test"})
			if err != nil {
				t.Fatal(err)
			}
			if im.Read != im.Added+im.Updated+im.Unchanged+im.Rejected {
				t.Fatalf("counts do not add up: %+v", im)
			}
			return im
		}
		counts := func(im contacts.Import) string {
			return fmt.Sprintf("%d/%d/%d/%d", im.Added, im.Updated, im.Unchanged, im.Rejected)
		}
		file := "email,name,cargo\nana@example.org,Ana,Analista\nluis@example.org,Luis,Jefe\n"
		if got := counts(imp(contacts.ModeAdd, file)); got != "2/0/0/0" {
			t.Fatalf("first import %s", got)
		}
		if got := counts(imp(contacts.ModeAdd, file)); got != "0/0/2/0" {
			t.Fatalf("the same file again %s, want everything unchanged", got)
		}
		changed := "email,name,cargo\nana@example.org,Ana María,Directora\nluis@example.org,Luis,Jefe\n"
		if got := counts(imp(contacts.ModeAdd, changed)); got != "0/0/2/0" {
			t.Fatalf("add keeps existing data: %s", got)
		}
		if got := counts(imp(contacts.ModeUpdate, changed)); got != "0/1/1/0" {
			t.Fatalf("update %s", got)
		}
		var name, attrs string
		if err := db.NewRaw("SELECT name, attrs FROM contacts WHERE address = 'ana@example.org'").Scan(ctx, &name, &attrs); err != nil ||
			name != "Ana María" || !strings.Contains(attrs, "Directora") {
			t.Fatalf("updated contact %q %q %v", name, attrs, err)
		}
		// The suppression list wins over an import.
		if _, _, err := suppress.Insert(ctx, db, suppress.Add{Address: "eva@example.org", Scope: suppress.ScopeAll, Reason: suppress.ReasonHardBounce,
			Actor: "test", Now: mailingtest.Start}); err != nil {
			t.Fatal(err)
		}
		im := imp(contacts.ModeAdd, "email\neva@example.org\n")
		if counts(im) != "0/0/0/1" || !strings.HasPrefix(im.Rejects[0].Reason, "suppressed: hard_bounce (all)") {
			t.Fatalf("suppressed address imported: %s %+v", counts(im), im.Rejects)
		}
		// Leaving the list is not undone by an import.
		if got := counts(imp(contacts.ModeUnsubscribe, "email\nluis@example.org\nnadie@example.org\n")); got != "0/1/0/1" {
			t.Fatalf("unsubscribe %s", got)
		}
		im = imp(contacts.ModeAdd, file)
		if counts(im) != "0/0/1/1" || !strings.HasPrefix(im.Rejects[0].Reason, "unsubscribed from the list") {
			t.Fatalf("re-import after an unsubscribe: %s %+v", counts(im), im.Rejects)
		}
		// Blocklisted: added if new, then never subscribed by an import.
		if got := counts(imp(contacts.ModeBlocklist, "email\nana@example.org\nspam@example.org\n")); got != "1/1/0/0" {
			t.Fatalf("blocklist %s", got)
		}
		im = imp(contacts.ModeAdd, "email\nspam@example.org\n")
		if counts(im) != "0/0/0/1" || im.Rejects[0].Reason != "the contact is blocklisted" {
			t.Fatalf("import of a blocklisted contact: %s %+v", counts(im), im.Rejects)
		}
		// A dry run reports and changes nothing.
		var before int
		if err := db.NewRaw("SELECT count(*) FROM contacts").Scan(ctx, &before); err != nil {
			t.Fatal(err)
		}
		dry, err := s.Import(ctx, strings.NewReader("email\nnuevo@example.org\n"), contacts.ImportOptions{Account: "enap/eventos", List: "boletin",
			DryRun: true, Actor: "test"})
		var after int
		if err2 := db.NewRaw("SELECT count(*) FROM contacts").Scan(ctx, &after); err != nil || err2 != nil || dry.Added != 1 || after != before || dry.ID != 0 {
			t.Fatalf("dry run %+v %v: contacts %d → %d", dry, err, before, after)
		}
		// Another account's contacts are its own.
		im2, err := s.Import(ctx, strings.NewReader(file), contacts.ImportOptions{Account: "sjti/talento", List: "boletin", Actor: "test"})
		if err != nil || counts(im2) != "2/0/0/0" {
			t.Fatalf("other account %+v %v", im2, err)
		}
		lists, err := s.Lists(ctx, "enap/eventos")
		if err != nil || len(lists) != 1 || lists[0].Subscribed != 1 || lists[0].Unsubscribed != 1 {
			t.Fatalf("lists %+v %v", lists, err)
		}
	})
}

// The errors name the problem.
func TestImportErrors(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		s := store(t, db)
		ctx := context.Background()
		for _, tt := range []struct {
			o    contacts.ImportOptions
			body string
			want string
		}{
			{contacts.ImportOptions{Account: "enap/eventos", List: "nope"}, "email\na@b.org\n", `enap/eventos has no list "nope"`},
			{contacts.ImportOptions{Account: "nadie", List: "boletin"}, "email\na@b.org\n", `no account "nadie"`},
			{contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Mode: "borrar"}, "email\na@b.org\n", `mode "borrar" is not`},
			{contacts.ImportOptions{Account: "enap/eventos", List: "boletin"}, "", "no header"},
			{contacts.ImportOptions{Account: "enap/eventos", List: "boletin"}, "nombre,ciudad\nAna,Lima\n", "no column holds the e-mail address"},
		} {
			if _, err := s.Import(ctx, strings.NewReader(tt.body), tt.o); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%+v: %v, want %q", tt.o, err, tt.want)
			}
		}
	})
}

// Deleting a contact removes it and its memberships, not the record of
// mail sent to it.
func TestDelete(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		s := store(t, db)
		ctx := context.Background()
		if _, err := s.Import(ctx, strings.NewReader("email\nana@example.org\n"), contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Actor: "t"}); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, "enap/eventos", "Ana@Example.org", "t", ""); err == nil {
			t.Fatal("a delete without a reason was accepted")
		}
		if err := s.Delete(ctx, "enap/eventos", "Ana@Example.org", "t", "solicitud 2026-77"); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.NewRaw("SELECT (SELECT count(*) FROM contacts) + (SELECT count(*) FROM contact_memberships)").Scan(ctx, &n); err != nil || n != 0 {
			t.Fatalf("rows left %d %v", n, err)
		}
		if err := s.Delete(ctx, "enap/eventos", "ana@example.org", "t", "otra vez"); err == nil || !strings.Contains(err.Error(), "has no contact ana@example.org") {
			t.Fatalf("second delete: %v", err)
		}
	})
}
