package report_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/quota"
	"github.com/servir-pe/envios/report"
)

// exampleDB opens a fresh SQLite database where sjti/talento sent one
// message to two people at noon in Lima on 26 November 2026.
func exampleDB() (*bun.DB, func()) {
	dir, err := os.MkdirTemp("", "report-example-")
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{DSN: filepath.Join(dir, "envios.db")})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := store.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	noon := func() time.Time { return time.Date(2026, 11, 26, 17, 0, 0, 0, time.UTC) }
	m, err := mailing.New(mailing.Config{DB: db, Now: noon, NewID: func() string { return "msg-1" }, UnsignedDomains: []string{"servir.gob.pe"}})
	if err != nil {
		log.Fatal(err)
	}
	_, err = m.Ledger().Init(ctx, quota.Plan{
		Pool:     quota.PoolSpec{Name: "servir-2026", Total: 1000, StartsAt: noon().AddDate(0, -1, 0), EndsAt: noon().AddDate(1, 0, 0)},
		Accounts: []quota.AccountSpec{{Name: "sjti/talento", Origin: "system", Allocation: 50}},
	}, "example")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := m.AddSender(ctx, "sjti/talento", "avisos@servir.gob.pe", "example"); err != nil {
		log.Fatal(err)
	}
	_, err = m.Send(ctx, mailing.Message{Account: "sjti/talento", From: "avisos@servir.gob.pe",
		To: []string{"Postulante@Example.com", "otra@example.com"}, Subject: "=1+1", Text: "Gracias."})
	if err != nil {
		log.Fatal(err)
	}
	return db, func() { m.Close(); db.Close(); os.RemoveAll(dir) }
}

// Every message to one address, whatever the case it was written in.
func ExampleReporter_Recipient() {
	db, done := exampleDB()
	defer done()
	rep := report.New(db, report.Config{}) // times in America/Lima
	page, err := rep.Recipient(context.Background(), report.Filter{Account: "sjti/talento", Address: "postulante@example.com"})
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range page.Rows {
		fmt.Println(r.Address, r.MessageID, r.Status, r.AcceptedAt.Format(time.RFC3339))
	}
	// Output: Postulante@example.com msg-1 queued 2026-11-26T12:00:00-05:00
}

// An export streams every row; a subject that a spreadsheet would run as
// a formula is written as text.
func ExampleReporter_Export() {
	db, done := exampleDB()
	defer done()
	rep := report.New(db, report.Config{})
	n, err := rep.Export(context.Background(), os.Stdout, report.CSV, report.Filter{Account: "sjti/talento"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n, "rows")
	// Output:
	// id,account,origin,message_id,campaign,subject,address,kind,status,accepted_at,attempts,last_attempt_at,final_at,remote_host,reply,rfc_message_id
	// 1,sjti/talento,library,msg-1,,'=1+1,Postulante@example.com,to,queued,2026-11-26T12:00:00-05:00,0,,,,,msg-1@envios.invalid
	// 2,sjti/talento,library,msg-1,,'=1+1,otra@example.com,to,queued,2026-11-26T12:00:00-05:00,0,,,,,msg-1@envios.invalid
	// 2 rows
}

// Totals by day of acceptance in Lima, counted from the recipient rows
// when asked.
func ExampleReporter_Totals() {
	db, done := exampleDB()
	defer done()
	rep := report.New(db, report.Config{})
	totals, err := rep.Totals(context.Background(), report.TotalsFilter{By: report.Day})
	if err != nil {
		log.Fatal(err)
	}
	for _, t := range totals {
		fmt.Println(t.Period.Format(time.DateOnly), t.Account, t.Origin, t.Accepted, t.Queued, t.Sent)
	}
	// Output: 2026-11-26 sjti/talento library 2 2 0
}
