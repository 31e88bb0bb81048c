package bounce

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// readFile reads one corpus file.
func readFile(t *testing.T, name string) *Report {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "corpus", name))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Read(raw)
	if err != nil {
		t.Fatalf("Read(%s): %v", name, err)
	}
	return r
}

func TestReadTokens(t *testing.T) {
	tests := []struct {
		file string
		kind Kind
		want []string
	}{
		// Return-Path b+TOKEN first, then the List-Unsubscribe URL and
		// mailto (one token, once); upper case folded; decoys skipped.
		{"synthetic-dsn-token.eml", KindDSN, []string{
			"1b-mvxhm2lpomwxi33l",
			"2c-mvxhm2lpomwxi33m",
		}},
		// A redacted ARF report: only the returned List-Unsubscribe tells
		// who complained; the quoted-printable soft break in the body's
		// link does not yield a cut token.
		{"synthetic-arf-redacted-token.eml", KindComplaint, []string{"3d-mvxhm2lpomwwc4tg"}},
		// A text bounce: the tail after "----- Original message -----".
		{"synthetic-text-delayed.eml", KindDelayed, []string{"1b-mvxhm2lpomwxi33l"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			r := readFile(t, tt.file)
			if r.Kind != tt.kind {
				t.Errorf("Kind = %q, want %q", r.Kind, tt.kind)
			}
			if !slices.Equal(r.Tokens, tt.want) {
				t.Errorf("Tokens = %q, want %q", r.Tokens, tt.want)
			}
			if len(r.Returned) == 0 {
				t.Error("no Returned")
			}
		})
	}
	if r := readFile(t, "synthetic-arf-redacted-token.eml"); len(r.Recipients) != 0 {
		t.Errorf("redacted recipient reported: %+v", r.Recipients)
	}
}

func TestFindTokens(t *testing.T) {
	const tok = "1b-mvxhm2lpomwxi33l"
	tests := []struct {
		name, in string
		want     []string
	}{
		{"return-path", "Return-Path: <b+" + strings.ToUpper(tok) + "@bounces.example>", []string{tok}},
		{"url then mailto, once", "<https://h/u/" + tok + ">, <mailto:u+" + tok + "@h>", []string{tok}},
		{"url at end", "https://h/u/" + tok, []string{tok}},
		{"too short", "b+ab-abcdefghijklmno@h /u/ab-abcdefghijklmno", nil},
		{"id too long", "b+" + strings.Repeat("a", 14) + "-" + strings.Repeat("a", 16) + "@h", nil},
		{"mac too long", "b+ab-" + strings.Repeat("a", 17) + "@h", nil},
		{"not base32", "b+ab-" + strings.Repeat("a", 15) + "1@h /u/ab-" + strings.Repeat("a", 15) + "8", nil},
		{"no dash", "b+" + strings.Repeat("a", 30) + "@h", nil},
		{"inside another local part", "bob+" + tok + "@h", nil},
		{"qp soft break", "/u/" + tok[:10] + "=\n" + tok[10:], nil},
	}
	for _, tt := range tests {
		if got := findTokens([]byte(tt.in)); !slices.Equal(got, tt.want) {
			t.Errorf("%s: findTokens(%q) = %q, want %q", tt.name, tt.in, got, tt.want)
		}
	}
}

func TestReadFields(t *testing.T) {
	r := readFile(t, "synthetic-dsn-token.eml")
	want := Recipient{
		Final:      "Maria.Quispe@example.net",
		Original:   "Maria.Quispe@example.net",
		Action:     "failed",
		Status:     "5.1.1",
		Diagnostic: "550 5.1.1 <Maria.Quispe@example.net>: Recipient address rejected: User unknown in virtual mailbox table",
		RemoteMTA:  "mail.example.net",
		Code:       550,
		Class:      Hard,
	}
	if len(r.Recipients) != 1 || r.Recipients[0] != want {
		t.Errorf("Recipients = %+v, want [%+v]", r.Recipients, want)
	}
	if r.ReportingMTA != "mx.example.net" || r.EnvelopeID != "1B-MVXHM2LPOMWXI33L" {
		t.Errorf("ReportingMTA %q, EnvelopeID %q", r.ReportingMTA, r.EnvelopeID)
	}
	if want := time.Date(2026, 3, 3, 15, 14, 58, 0, time.UTC); !r.ArrivalDate.Equal(want) {
		t.Errorf("ArrivalDate = %v, want %v", r.ArrivalDate, want)
	}

	r = readFile(t, "sisimai-email-gsuite-02.eml")
	if r.Kind != KindDSN || r.ReportingMTA != "googlemail.com" {
		t.Errorf("Gmail DSN: Kind %q, ReportingMTA %q", r.Kind, r.ReportingMTA)
	}
	if !bytes.Contains(r.Returned, []byte("Message-ID: <002b01d2a4bb$028be941$b756c59a@example>")) {
		t.Errorf("Returned does not hold the returned message: %q", r.Returned)
	}

	r = readFile(t, "enmime-multi_recipient_dsn.raw")
	if got := r.Recipients[0].Diagnostic; got != "550 'arathib@vnet.IBM.COM' is not a registered gateway user" {
		t.Errorf("unfolded Diagnostic = %q", got)
	}

	r = readFile(t, "synthetic-global-dsn-base64.eml")
	if got := r.Recipients[0].Original; got != "josé.pérez@ejemplo.gob.pe" {
		t.Errorf("Original with \\x{} escapes = %q", got)
	}

	r = readFile(t, "sisimai-arf-19.eml")
	if r.EnvelopeID != "eeeeeeeeeeeeeeeeeeee00--.000000" || r.ArrivalDate.IsZero() {
		t.Errorf("ARF EnvelopeID %q, ArrivalDate %v", r.EnvelopeID, r.ArrivalDate)
	}
}

func TestReadWillRetryUntil(t *testing.T) {
	raw := "From: MAILER-DAEMON@mx.example.org\nSubject: Delayed Mail (still being retried)\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\n" +
		"Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\n" +
		"Final-Recipient: rfc822; a@Example.ORG\nAction: delayed\nStatus: 4.4.1\n" +
		"Diagnostic-Code: X-Postfix; connect to mx.example.org[192.0.2.1]:25: Connection timed out\n" +
		"Will-Retry-Until: Thu, 5 Mar 2026 10:00:00 -0500 (EST)\n--b--\n"
	r, err := Read([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != KindDelayed || len(r.Recipients) != 1 {
		t.Fatalf("Kind %q, %d recipients", r.Kind, len(r.Recipients))
	}
	rc := r.Recipients[0]
	if want := time.Date(2026, 3, 5, 15, 0, 0, 0, time.UTC); !rc.WillRetryUntil.Equal(want) {
		t.Errorf("WillRetryUntil = %v, want %v", rc.WillRetryUntil, want)
	}
	if rc.Final != "a@example.org" || rc.Class != Transient {
		t.Errorf("recipient %+v", rc)
	}
}

func TestReadNotMessage(t *testing.T) {
	for _, in := range []string{"", "\n\nbody only", "no header here\n\n", "   : x\n"} {
		r, err := Read([]byte(in))
		if !errors.Is(err, ErrNotMessage) || r != nil {
			t.Errorf("Read(%q) = %v, %v; want nil, ErrNotMessage", in, r, err)
		}
	}
	r, err := Read([]byte("Subject: hello\n\nhi"))
	if err != nil || r.Kind != KindUnknown {
		t.Errorf("a plain message: %v, %v", r, err)
	}
}

func TestReadReturnedCap(t *testing.T) {
	big := strings.Repeat("x", 2*MaxReturned)
	raw := "From: postmaster@example.org\nSubject: Undeliverable\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\n" +
		"Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n" +
		"--b\nContent-Type: message/rfc822\n\nSubject: x\n\n" + big + "\n--b--\n"
	r, err := Read([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Returned) != MaxReturned {
		t.Errorf("Returned is %d bytes, want %d", len(r.Returned), MaxReturned)
	}
}

func TestReadLimits(t *testing.T) {
	long := "Subject: x\n" + strings.Repeat(" y\n", 50000) + "\nbody"
	h, _, ok := parseHeader([]byte(long))
	if !ok || len(h) != 1 || len(h[0].value) > maxValue {
		t.Errorf("a 50,000-line Subject: ok %v, %d fields, value of %d bytes", ok, len(h), len(h[0].value))
	}
	groups := report("delivery-status", "message/delivery-status",
		strings.Repeat("Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n\n", 2*maxGroups))
	r, err := Read([]byte(groups))
	if err != nil || len(r.Recipients) > maxGroups {
		t.Errorf("%d groups read (max %d), err %v", len(r.Recipients), maxGroups, err)
	}
	var lines strings.Builder
	for i := range 3 * maxTextRecipients {
		fmt.Fprintf(&lines, "<u%d@example.org>: 550 5.1.1 no such user\n", i)
	}
	r, err = Read([]byte("From: MAILER-DAEMON@example.org\nSubject: failure notice\n\n" + lines.String()))
	if err != nil || len(r.Recipients) != maxTextRecipients {
		t.Errorf("%d text recipients (max %d), err %v", len(r.Recipients), maxTextRecipients, err)
	}
	nested := strings.Repeat("Content-Type: multipart/mixed; boundary=b\n\n--b\n", 5*maxDepth) + "\nhi\n"
	if _, err := Read([]byte(nested)); err != nil {
		t.Errorf("deep nesting: %v", err)
	}
}
