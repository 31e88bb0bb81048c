package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/internal/suppress"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
	"github.com/servir-pe/envios/quota"
)

// reportSession is run after mail was sent and delivered, and compared
// with testdata/report.golden.
var reportSession = []string{
	`report recipient ANA@example.com`,
	`report recipient ana@example.com --account sjti/talento --json`,
	`report recipient ana@example.com --account sjci/imagen`,
	`report recipient ana@example.com --timezone UTC`,
	`report message msg-01`,
	`report message msg-02 --json`,
	`report message msg-02 --account sjti/talento`,
	`report campaign semana`,
	`report campaign semana --account enap/eventos --json`,
	`report campaign semana --account sjti/talento`,
	`report totals`,
	`report totals --by month --account enap/eventos`,
	`report totals --by day --timezone UTC --json`,
	`report totals --origin smtp`,
	`report totals --from 2026-11-27`,
	`report totals --by account`,
	`report verify`,
	`report log`,
	`report log --account sjti/talento --json`,
	`report export --account enap/eventos`,
	`report export --format jsonl --campaign semana --from 2026-11-26 --to 2026-11-26`,
	`report export --address ana@example.com --account sjci/imagen`,
}

// sendForReports sends, as of testNow, four messages and delivers them
// through a sink that bounces nobody@:
//
//	msg-01 sjti/talento  Ana@Example.com, bob@example.com
//	msg-02 enap/eventos  batch, campaign semana: ana@, nobody@ (bounced)
//	msg-03 sjci/imagen   ana@example.com, through the HTTP origin, subject "=cmd"
//	msg-04 enap/eventos  campaign semana, scheduled for 1 December
func sendForReports(t *testing.T, dsn string) {
	t.Helper()
	for _, line := range []string{"db migrate", "quota init --from ../../examples/servir/pool.yaml"} {
		if code, _, stderr := runLine(t, dsn, line); code != 0 {
			t.Fatalf("%s: %s", line, stderr)
		}
	}
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	m, err := mailing.New(mailing.Config{DB: db, Now: func() time.Time { return testNow }, MessageIDDomain: "envios.servir.gob.pe",
		NewID: func() string { n++; return fmt.Sprintf("msg-%02d", n) }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, a := range []string{"sjti/talento", "enap/eventos", "sjci/imagen"} {
		if _, err := m.AddSender(ctx, a, "avisos@servir.gob.pe", "test"); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := m.AddDomainKey(ctx, "servir.gob.pe", "ed25519"); err != nil {
		t.Fatal(err)
	}
	from := "SERVIR <avisos@servir.gob.pe>"
	if _, err := m.Send(ctx, mailing.Message{Account: "sjti/talento", From: from, To: []string{"Ana@Example.com", "bob@example.com"},
		Subject: "Convocatoria CAS 2026", Text: "x", Tags: []string{"cas"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SendBatch(ctx, mailing.Batch{Account: "enap/eventos", From: from, Subject: "Semana de la gestión", Text: "x",
		Campaign: "semana", Origin: quota.OriginCampaign,
		Recipients: mailing.List(mailing.Recipient{Address: "ana@example.com"}, mailing.Recipient{Address: "nobody@example.com"})}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Send(ctx, mailing.Message{Account: "sjci/imagen", From: from, To: []string{"ana@example.com"},
		Subject: "=cmd|' /C calc'!A0", Text: "x", Origin: quota.OriginHTTP}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Send(ctx, mailing.Message{Account: "enap/eventos", From: from, To: []string{"carla@example.com"},
		Subject: "Recordatorio", Text: "x", Campaign: "semana", SendAt: time.Date(2026, 12, 1, 14, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	sink := mailtest.NewSink(t)
	sink.Reply = func(rcpt string) error {
		if strings.HasPrefix(rcpt, "nobody@") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}
	eng, err := m.NewEngine(ctx, mailing.EngineConfig{Workers: 1, ReturnPathDomain: "envios.servir.gob.pe",
		Transport: &mailing.Smarthost{Addr: sink.Addr, TLS: sink.ClientTLS(), Timeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := eng.RunOnce(ctx); err != nil || n != 5 {
		t.Fatalf("delivered %d, %v; want 5", n, err)
	}
	// Ana complained about bulk mail: the report shows the suppression.
	if _, _, err := suppress.Insert(ctx, db, suppress.Add{Address: "ana@example.com", Scope: suppress.ScopeBulk, Reason: suppress.ReasonComplaint,
		Actor: "inbound", Evidence: map[string]string{"feedback_type": "abuse"}, Now: time.Date(2026, 11, 26, 15, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
}

func TestReportCommands(t *testing.T) {
	for _, e := range storetest.Engines {
		t.Run(string(e), func(t *testing.T) {
			dsn := storetest.DSN(t, e)
			sendForReports(t, dsn)
			var out bytes.Buffer
			for _, line := range reportSession {
				code, stdout, stderr := runLine(t, dsn, line)
				fmt.Fprintf(&out, "$ relayd %s\n%s%s", line, stdout, stderr)
				if code != 0 {
					fmt.Fprintf(&out, "[exit %d]\n", code)
				}
				out.WriteString("\n")
			}
			golden(t, "report.golden", out.String(), e == store.SQLite)
		})
	}
}

// TestReportExportFile: -o writes the whole export or, on failure, no file.
func TestReportExportFile(t *testing.T) {
	dsn := storetest.DSN(t, store.SQLite)
	sendForReports(t, dsn)
	dir := t.TempDir()
	path := filepath.Join(dir, "envios.csv")
	code, stdout, stderr := runLine(t, dsn, "report export -o "+path)
	if code != 0 || stdout != "exported 6 recipients to "+path+"\n" {
		t.Fatalf("exit %d: %s%s", code, stdout, stderr)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil || len(recs) != 7 || recs[5][5] != "'=cmd|' /C calc'!A0" {
		t.Fatalf("%d records %v: %q", len(recs), err, recs)
	}
	missing := filepath.Join(dir, "no-such-dir", "x.csv")
	if code, _, stderr := runLine(t, dsn, "report export -o "+missing); code != 1 || !strings.Contains(stderr, "no such file or directory") {
		t.Fatalf("export into a missing directory: exit %d %s", code, stderr)
	}
	if code, _, _ := runLine(t, dsn, "report export --account nadie/nadie -o "+filepath.Join(dir, "y.csv")); code != 1 {
		t.Fatalf("unknown account: exit %d", code)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("a failed export left files behind: %v", entries)
	}
}
