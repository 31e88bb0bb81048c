package contacts_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/audit"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing/contacts"
)

// segmentContacts imports the contacts the segment tests select from:
// six on 2026-11-26 (list boletin), one more on 2026-12-02 (list
// boletín, with eva), an update giving ana, eva and raul the attributes
// Región, Fecha de alta and Status (column headers no word can name),
// luis unsubscribed from boletin, pedro blocklisted, and a contact of
// another account that no expression may match.
func segmentContacts(t *testing.T, db *bun.DB) *contacts.Store {
	t.Helper()
	s := store(t, db)
	ctx := context.Background()
	now := time.Date(2026, 11, 26, 17, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return now }
	if _, err := s.CreateList(ctx, "enap/eventos", "boletín", "", "test"); err != nil {
		t.Fatal(err)
	}
	imp := func(account, list string, mode contacts.Mode, body string) {
		t.Helper()
		im, err := s.Import(ctx, strings.NewReader(body), contacts.ImportOptions{Account: account, List: list, Mode: mode, Actor: "test"})
		if err != nil || im.Rejected != 0 {
			t.Fatalf("import %+v %v", im, err)
		}
	}
	imp("enap/eventos", "boletin", contacts.ModeAdd, `email,name,region,cargo,edad,nota
ana@gmail.com,Ana Peña,Lima,Directora general,34,
luis@hotmail.com,LUIS ÑAHUI,LIMA,Analista,treinta,a_b
eva@minedu.gob.pe,Eva,Cusco,Sub Director,30.0,50% off
raul@servir.gob.pe,Raúl,lima,Jefe,-3,axb
pedro@example.org,Pedro,ÁNCASH,DIRECTOR,1e3,
sin@example.org,Sin Datos,,,,
`)
	now = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	imp("enap/eventos", "boletín", contacts.ModeAdd, "email,name,region\nmia@minedu.gob.pe,Mía,Lima\neva@minedu.gob.pe,Eva,Cusco\n")
	imp("enap/eventos", "boletin", contacts.ModeUpdate, `email,name,Región,Fecha de alta,Status
ana@gmail.com,Ana Peña,Lima,2026-03-15,titular
eva@minedu.gob.pe,Eva,CUSCO,2025-11-30,Suplente
raul@servir.gob.pe,Raúl,lima,2026-01-02,
`)
	imp("enap/eventos", "boletin", contacts.ModeUnsubscribe, "email\nluis@hotmail.com\n")
	imp("enap/eventos", "boletin", contacts.ModeBlocklist, "email\npedro@example.org\n")
	imp("sjti/talento", "boletin", contacts.ModeAdd, "email,name,region,cargo,edad\notro@gmail.com,Otro,Lima,Director,99\n")
	return s
}

// Which contacts each expression matches, on every engine: case
// folding, numbers beside values that are not, missing attributes, LIKE's
// wildcards taken literally, lists, domains, days, precedence, and an
// injection attempt that is only a value.
func TestSegmentMatch(t *testing.T) {
	const (
		ana, eva, luis, mia = "ana@gmail.com", "eva@minedu.gob.pe", "luis@hotmail.com", "mia@minedu.gob.pe"
		pedro, raul, sin    = "pedro@example.org", "raul@servir.gob.pe", "sin@example.org"
	)
	cases := []struct {
		expr string
		want []string
	}{
		{`region = "lima"`, []string{ana, luis, mia, raul}},
		{`region != "Lima"`, []string{eva, pedro}}, // sin has no region: no match
		{`not region = "Lima"`, []string{eva, pedro, sin}},
		{`region = "áncash"`, []string{pedro}},
		{`name = "luis ñahui" or name starts "ana p"`, []string{ana, luis}},
		{`edad > 30`, []string{ana}}, // treinta, 1e3 and a missing edad are no numbers
		{`edad = 30`, []string{eva}},
		{`edad <= 30`, []string{eva, raul}},
		{`not edad > 30`, []string{eva, luis, mia, pedro, raul, sin}},
		{`edad in (34, "treinta")`, []string{ana, luis}},
		{`cargo contains "director"`, []string{ana, eva, pedro}},
		{`nota contains "a_b" or nota ends "% off"`, []string{eva, luis}},
		{`region exists and not cargo exists`, []string{mia}},
		{`zona != "a"`, nil},
		{`domain in ("gmail.com", "HOTMAIL.com")`, []string{ana, luis}},
		{`not domain in ("gmail.com", "hotmail.com")`, []string{eva, mia, pedro, raul, sin}},
		{`domain = "minedu.gob.pe"`, []string{eva, mia}},
		{`list "boletín"`, []string{eva, mia}},
		{`list "boletin"`, []string{ana, eva, pedro, raul, sin}}, // luis left it
		{`created_at >= 2026-12-01`, []string{mia}},
		{`created_at = 2026-11-26`, []string{ana, eva, luis, pedro, raul, sin}},
		{`created_at < 2026-11-26 or created_at > 2026-12-02`, nil},
		{`created_at <= 2026-12-02 and created_at > 2026-11-26`, []string{mia}},
		{`region = "Cusco" or region = "Lima" and cargo contains "jefe"`, []string{eva, raul}},
		{`not (region = "Cusco" or region = "Lima") and name exists`, []string{pedro, sin}},
		{`status = "blocklisted"`, []string{pedro}},
		{`region = "Lima" and (cargo contains "director" or list "boletín") and not domain in ("gmail.com", "hotmail.com")`, []string{mia}},
		{`x = "'; DROP TABLE contacts; --" or name = "Ana'); DELETE FROM contacts; --"`, nil},

		// Attribute names that are no ASCII word: a Unicode word, or any
		// name between backticks; the key is matched exactly.
		{`Región = "LIMA"`, []string{ana, raul}},
		{"`Región` in (\"cusco\", \"x\")", []string{eva}},
		{"not `Región` = \"Lima\"", []string{eva, luis, mia, pedro, sin}},
		{`Región != "Lima" and region = "Cusco"`, []string{eva}},
		{`región exists or REGIÓN exists or Region exists`, nil},
		{"`Fecha de alta` starts \"2026-\"", []string{ana, raul}},
		{"`Fecha de alta` contains \"-11-\" or `Fecha de alta` ends \"-02\"", []string{eva, raul}},
		{"`Fecha de alta` = \"2025-11-30\"", []string{eva}},
		{"`Fecha de alta` >= 2026", nil}, // a date is no number
		{"`Fecha de alta` exists and not Región starts \"l\"", []string{eva}},
		{"`Status` = \"TITULAR\" or `Status` starts \"supl\"", []string{ana, eva}},
		{"`Status` exists and status = \"active\"", []string{ana, eva}},
		{"`status` exists or `name` exists or `Fecha` exists", nil},
		{"`x'); DROP TABLE contacts; --` exists or `?` = \"?\"", nil},
	}
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		s := segmentContacts(t, db)
		ctx := context.Background()
		for _, c := range cases {
			where, args, err := s.Match(ctx, db, "enap/eventos", c.expr)
			if err != nil {
				t.Errorf("%s: %v", c.expr, err)
				continue
			}
			var got []string
			if err := db.NewRaw("SELECT c.address FROM contacts AS c WHERE "+where+" ORDER BY c.address", args...).Scan(ctx, &got); err != nil {
				t.Errorf("%s: %v\n%s", c.expr, err, where)
				continue
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("%s: matches %q, want %q", c.expr, got, c.want)
			}
		}
		var n int
		if err := db.NewRaw("SELECT count(*) FROM contacts").Scan(ctx, &n); err != nil || n != 8 {
			t.Errorf("contacts after the injection attempt: %d %v", n, err)
		}
		for _, c := range []struct {
			expr string
			want int64
		}{{`region = "lima"`, 4}, {`cargo contains "director"`, 2}, {`status = "blocklisted"`, 0}, {"`Fecha de alta` starts \"2026\"", 2}} {
			if got, err := s.CountSegment(ctx, "enap/eventos", c.expr); err != nil || got != c.want {
				t.Errorf("CountSegment(%s) = %d %v, want %d (active contacts only)", c.expr, got, err, c.want)
			}
		}
		sg, err := s.SaveSegment(ctx, "enap/eventos", "altas 2026", "`Fecha de alta`  STARTS \"2026\" AND `Región` = \"Lima\"", "test")
		if want := "`Fecha de alta` starts \"2026\" and Región = \"Lima\""; err != nil || sg.Expression != want {
			t.Errorf("saved %q %v, want %q", sg.Expression, err, want)
		} else if n, err := s.CountSegment(ctx, "enap/eventos", sg.Expression); err != nil || n != 2 {
			t.Errorf("the saved segment counts %d %v, want 2", n, err)
		}
		for _, c := range []struct {
			account, expr string
			kind          error
			msg           string
		}{
			{"enap/eventos", `list "nope"`, contacts.ErrInvalid, `the expression names the list "nope", which enap/eventos does not have`},
			{"enap/eventos", `region = `, contacts.ErrInvalid, `segment: at 9: expected a value after "=", found end of input`},
			{"nadie", `region = "Lima"`, contacts.ErrNotFound, `no account "nadie"`},
		} {
			if _, err := s.CountSegment(ctx, c.account, c.expr); !errors.Is(err, c.kind) || err.Error() != c.msg {
				t.Errorf("CountSegment(%s, %s): %v, want %q", c.account, c.expr, err, c.msg)
			}
		}
	})
}

// Saving, replacing, listing, reading and deleting segments, with the
// lists they name checked and each change audited.
func TestSegments(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		s := segmentContacts(t, db)
		ctx := context.Background()
		created := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
		s.Now = func() time.Time { return created }
		sg, err := s.SaveSegment(ctx, "enap/eventos", " limeños ", `REGION = "Lima"  AND list "boletín"`, "ana")
		if err != nil {
			t.Fatal(err)
		}
		if sg.ID == 0 || sg.Name != "limeños" || sg.Expression != `REGION = "Lima" and list "boletín"` || sg.CreatedBy != "ana" ||
			!sg.CreatedAt.Equal(created) || !sg.UpdatedAt.Equal(created) || sg.Account != "enap/eventos" {
			t.Fatalf("saved %+v", sg)
		}
		updated := created.Add(time.Hour)
		s.Now = func() time.Time { return updated }
		again, err := s.SaveSegment(ctx, "enap/eventos", "limeños", `region = "Lima"`, "luis")
		if err != nil {
			t.Fatal(err)
		}
		if again.ID != sg.ID || again.Expression != `region = "Lima"` || again.CreatedBy != "ana" || !again.CreatedAt.Equal(created) ||
			!again.UpdatedAt.Equal(updated) {
			t.Fatalf("replaced %+v, was %+v", again, sg)
		}
		if _, err := s.SaveSegment(ctx, "enap/eventos", "cusqueños", `region = "Cusco"`, "ana"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SaveSegment(ctx, "sjti/talento", "limeños", `region = "Lima"`, "ana"); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			account, name, expr string
			kind                error
			msg                 string
		}{
			{"enap/eventos", "x", `list "boletín" or list "nope"`, contacts.ErrInvalid, `the expression names the list "nope", which enap/eventos does not have`},
			{"enap/eventos", "x", `region = "Lima" or`, contacts.ErrInvalid, `segment: at 18: expected a field, "not", "(" or "list", found end of input`},
			{"enap/eventos", " ", `region = "Lima"`, contacts.ErrInvalid, `a segment needs a name of 1 to 200 characters`},
			{"nadie", "x", `region = "Lima"`, contacts.ErrNotFound, `no account "nadie"`},
		} {
			if _, err := s.SaveSegment(ctx, c.account, c.name, c.expr, "ana"); !errors.Is(err, c.kind) || err.Error() != c.msg {
				t.Errorf("SaveSegment(%s, %q, %s): %v, want %q", c.account, c.name, c.expr, err, c.msg)
			}
		}

		names := func(account string) []string { return segmentNames(t, s, account) }
		if got, want := names("enap/eventos"), []string{"enap/eventos:cusqueños", "enap/eventos:limeños"}; !slices.Equal(got, want) {
			t.Errorf("Segments = %q, want %q", got, want)
		}
		if got := names(""); len(got) != 3 || got[2] != "sjti/talento:limeños" {
			t.Errorf("every account's segments %q", got)
		}
		got, err := s.Segment(ctx, "enap/eventos", "limeños")
		if err != nil || got.ID != again.ID || got.Account != again.Account || got.Name != again.Name || got.Expression != again.Expression ||
			!got.CreatedAt.Equal(again.CreatedAt) || !got.UpdatedAt.Equal(again.UpdatedAt) || got.CreatedBy != again.CreatedBy {
			t.Errorf("Segment = %+v %v, want %+v", got, err, again)
		}
		if n, err := s.CountSegment(ctx, "enap/eventos", got.Expression); err != nil || n != 4 {
			t.Errorf("the saved segment counts %d %v", n, err)
		}

		if err := s.DeleteSegment(ctx, "enap/eventos", "limeños", "luis"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Segment(ctx, "enap/eventos", "limeños"); !errors.Is(err, contacts.ErrNotFound) {
			t.Errorf("deleted segment: %v", err)
		}
		if err := s.DeleteSegment(ctx, "enap/eventos", "limeños", "luis"); !errors.Is(err, contacts.ErrNotFound) ||
			err.Error() != `enap/eventos has no segment "limeños"` {
			t.Errorf("second delete: %v", err)
		}
		if _, err := s.Segment(ctx, "sjti/talento", "limeños"); err != nil {
			t.Errorf("the other account's segment of that name: %v", err)
		}
		if _, err := s.Segments(ctx, "nadie"); !errors.Is(err, contacts.ErrNotFound) {
			t.Errorf("segments of no account: %v", err)
		}

		trail := segmentTrail(t, db)
		want := []string{ // newest first
			"luis segment.delete enap/eventos limeños",
			`ana segment.save sjti/talento limeños: region = "Lima"`,
			`ana segment.save enap/eventos cusqueños: region = "Cusco"`,
			`luis segment.save enap/eventos limeños: region = "Lima"`,
			`ana segment.save enap/eventos limeños: REGION = "Lima" and list "boletín"`,
		}
		if !slices.Equal(trail, want) {
			t.Errorf("audit trail\n%s\nwant\n%s", strings.Join(trail, "\n"), strings.Join(want, "\n"))
		}
	})
}

// segmentNames is Segments(account) as account:name.
func segmentNames(t *testing.T, s *contacts.Store, account string) []string {
	t.Helper()
	sgs, err := s.Segments(context.Background(), account)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, sg := range sgs {
		out = append(out, sg.Account+":"+sg.Name)
	}
	return out
}

// segmentTrail is the audit log's segment events, newest first.
func segmentTrail(t *testing.T, db *bun.DB) []string {
	t.Helper()
	events, err := audit.List(context.Background(), db, 0)
	if err != nil {
		t.Fatal(err)
	}
	var trail []string
	for _, e := range events {
		if strings.HasPrefix(e.Action, "segment.") {
			trail = append(trail, e.Actor+" "+e.Action+" "+e.Subject+" "+e.Detail)
		}
	}
	return trail
}
