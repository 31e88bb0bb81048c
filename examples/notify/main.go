// Command notify is what an agency information system copies to send
// personalised notifications through envios in-process, with the mailing
// package, on the same database relayd uses.
//
//	go run ./examples/notify --db data/relayd.db --account gdcrsc/capacidades \
//	    --from avisos@servir.gob.pe --demo
//
// --demo first creates what relayd's admin would (a small pool, the account
// and its sender identity) so the example runs on an empty database. The
// mail is queued: `relayd serve` delivers it once the delivery engine lands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/quota"
)

// participant is one recipient's data; its fields are the template fields.
type participant struct {
	Nombre string
	Curso  string
	Fecha  string
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("notify: ")
	dsn := flag.String("db", "data/relayd.db", "envios database: SQLite file or postgres:// URL")
	account := flag.String("account", "gdcrsc/capacidades", "the account to charge")
	from := flag.String("from", "avisos@servir.gob.pe", "a sender identity of the account")
	demo := flag.Bool("demo", false, "create a demo pool, the account and the sender if missing")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := mailing.Open(ctx, *dsn, mailing.Config{MessageIDDomain: "envios.servir.gob.pe"})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	if *demo {
		if err := setUpDemo(ctx, m, *account, *from); err != nil {
			log.Fatal(err)
		}
	}

	participants := []participant{
		{"Ana Quispe", "Ética en la Función Pública", "3 de diciembre"},
		{"Luis Mamani", "Gestión por Resultados", "5 de diciembre"},
		{"Rosa Huamán", "Ética en la Función Pública", "3 de diciembre"},
	}
	addresses := []string{"ana.quispe@example.com", "luis.mamani@example.com", "rosa.huaman@example.com"}
	recipients := func(yield func(mailing.Recipient, error) bool) {
		for i, p := range participants {
			if !yield(mailing.Recipient{Address: addresses[i], Data: p}, nil) {
				return
			}
		}
	}

	rec, err := m.SendBatch(ctx, mailing.Batch{
		Account:  *account,
		From:     "SERVIR <" + *from + ">",
		Subject:  "{{.Nombre}}: su curso {{.Curso}} empieza el {{.Fecha}}",
		Text:     "Estimado/a {{.Nombre}}:\n\nSu curso «{{.Curso}}» empieza el {{.Fecha}}.\n\nSERVIR",
		HTML:     "<p>Estimado/a {{.Nombre}}:</p><p>Su curso <b>{{.Curso}}</b> empieza el {{.Fecha}}.</p><p>SERVIR</p>",
		Campaign: "inicio-de-cursos",
		Tags:     []string{"cursos"},
		// A retry after a crash or timeout resumes instead of sending twice.
		IdempotencyKey: "inicio-de-cursos-" + time.Now().Format("2006-01-02"),
		Expected:       len(participants),
		Recipients:     recipients,
	})
	switch {
	case errors.Is(err, quota.ErrInsufficient):
		log.Fatalf("the account's pool is spent: %v", err)
	case err != nil:
		log.Fatal(err)
	}
	fmt.Printf("message %s: %d accepted, %d already sent by an earlier run, %d rejected\n",
		rec.MessageID, rec.Accepted, rec.Resumed, rec.NRejected)
	for _, r := range rec.Rejected {
		fmt.Printf("  rejected #%d %s: %v\n", r.Index, r.Address, r.Err)
	}
	info, err := m.Message(ctx, *account, rec.MessageID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("status: %v\n", info.Counts)
}

// setUpDemo does, on an empty database, what relayd's admin would: a small
// pool with the account, its sender identity and a DKIM key.
func setUpDemo(ctx context.Context, m *mailing.Mailer, account, from string) error {
	l := m.Ledger()
	if _, err := l.Account(ctx, account); err == nil {
		return nil // set up already
	} else if !errors.Is(err, quota.ErrNotFound) {
		return err
	}
	start := time.Now().UTC().Truncate(24 * time.Hour)
	_, err := l.Init(ctx, quota.Plan{
		Pool:     quota.PoolSpec{Name: "demo", Total: 1000, StartsAt: start, EndsAt: start.AddDate(1, 0, 0)},
		Accounts: []quota.AccountSpec{{Name: account, Origin: "system", Allocation: 1000}},
	}, "example:notify")
	if err != nil {
		return err
	}
	if _, err := m.AddSender(ctx, account, from, "example:notify"); err != nil {
		return err
	}
	domain := from[strings.LastIndexByte(from, '@')+1:]
	name, value, err := m.AddDomainKey(ctx, domain, "ed25519")
	if err != nil {
		return err
	}
	fmt.Printf("demo DKIM key for %s (publish it for real use): %s TXT %q\n", domain, name, value)
	return nil
}
