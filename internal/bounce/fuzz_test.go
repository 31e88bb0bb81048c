package bounce

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// tokenShape is what every reported token must look like.
var tokenShape = regexp.MustCompile(`^[0-9a-z]{1,13}-[a-z2-7]{16}$`)

// kinds are the valid Kinds.
var kinds = map[Kind]bool{KindDSN: true, KindDelayed: true, KindComplaint: true, KindAutoReply: true, KindFeedback: true, KindUnknown: true}

// checkInvariants fails t when r breaks a promise of the Report type.
func checkInvariants(t testing.TB, r *Report) {
	t.Helper()
	if !kinds[r.Kind] {
		t.Errorf("Kind %q is not one of the constants", r.Kind)
	}
	if len(r.Returned) > MaxReturned {
		t.Errorf("Returned is %d bytes, more than %d", len(r.Returned), MaxReturned)
	}
	for _, tok := range r.Tokens {
		if !tokenShape.MatchString(tok) {
			t.Errorf("token %q is not a lower-case ID36-BASE32 token", tok)
		}
	}
	for _, rc := range r.Recipients {
		if rc.Action == "failed" && rc.Class == "" {
			t.Errorf("failed recipient %q has no Class", rc.Final)
		}
	}
}

func FuzzRead(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "corpus", "*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := Read(raw)
		if err != nil {
			if r != nil {
				t.Fatalf("Read returned a report and an error %v", err)
			}
			return
		}
		checkInvariants(t, r)
	})
}
