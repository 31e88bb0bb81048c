package bounce

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// corpusCase is the expected reading of one corpus file.
type corpusCase struct {
	file         string
	kind         Kind
	feedbackType string
	tokens       []string
	recipients   []wantRecipient
	note         string
}

// wantRecipient is the expected part of one Recipient.
type wantRecipient struct {
	final, action, status string
	class                 Class
}

func TestCorpus(t *testing.T) {
	listed := map[string]bool{}
	for _, tc := range corpusCases {
		listed[tc.file] = true
		t.Run(tc.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", "corpus", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			r, err := Read(raw)
			if err != nil {
				t.Fatalf("Read: %v (%s)", err, tc.note)
			}
			if r.Kind != tc.kind {
				t.Errorf("Kind = %q, want %q (%s)", r.Kind, tc.kind, tc.note)
			}
			if r.FeedbackType != tc.feedbackType {
				t.Errorf("FeedbackType = %q, want %q", r.FeedbackType, tc.feedbackType)
			}
			if !slices.Equal(r.Tokens, tc.tokens) {
				t.Errorf("Tokens = %q, want %q", r.Tokens, tc.tokens)
			}
			var got []wantRecipient
			for _, rc := range r.Recipients {
				got = append(got, wantRecipient{rc.Final, rc.Action, rc.Status, rc.Class})
			}
			if !slices.Equal(got, tc.recipients) {
				t.Errorf("Recipients = %+v,\nwant %+v (%s)", got, tc.recipients, tc.note)
			}
			checkInvariants(t, r)
		})
	}
	files, err := filepath.Glob(filepath.Join("testdata", "corpus", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s has no entry in corpusCases", filepath.Base(f))
		}
	}
	if len(files) < 40 {
		t.Errorf("corpus has %d files, want at least 40", len(files))
	}
}
