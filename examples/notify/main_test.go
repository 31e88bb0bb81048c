package main

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// The example runs as a user would run it, twice: the second run resumes
// the same batch and sends nothing again.
func TestNotifyRunsTwiceSendsOnce(t *testing.T) {
	db := filepath.Join(t.TempDir(), "relayd.db")
	run := func(args ...string) string {
		out, err := exec.Command("go", append([]string{"run", "."}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("go run . %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	first := run("--db", db, "--demo")
	if !regexp.MustCompile(`(?s)demo DKIM key for servir.gob.pe.*message \S+: 3 accepted, 0 already sent by an earlier run, 0 rejected\nstatus: map\[queued:3\]`).MatchString(first) {
		t.Fatalf("first run:\n%s", first)
	}
	second := run("--db", db)
	if !regexp.MustCompile(`: 0 accepted, 3 already sent by an earlier run`).MatchString(second) {
		t.Fatalf("second run:\n%s", second)
	}
}
