package mailing_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/quota"
)

// exampleMailer opens a mailer on a fresh SQLite file with one account,
// sjti/talento (50 messages), allowed to send as avisos@servir.gob.pe.
func exampleMailer(now func() time.Time) (*mailing.Mailer, func()) {
	dir, err := os.MkdirTemp("", "mailing-example-")
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	m, err := mailing.Open(ctx, filepath.Join(dir, "envios.db"), mailing.Config{Now: now, MessageIDDomain: "envios.servir.gob.pe"})
	if err != nil {
		log.Fatal(err)
	}
	_, err = m.Ledger().Init(ctx, quota.Plan{
		Pool:     quota.PoolSpec{Name: "servir-2026", Total: 8_306_727, StartsAt: time.Date(2026, 11, 1, 5, 0, 0, 0, time.UTC), EndsAt: time.Date(2027, 11, 1, 5, 0, 0, 0, time.UTC)},
		Accounts: []quota.AccountSpec{{Name: "sjti/talento", Origin: "system", Allocation: 50}},
	}, "example")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := m.AddSender(ctx, "sjti/talento", "avisos@servir.gob.pe", "example"); err != nil {
		log.Fatal(err)
	}
	if _, _, err := m.AddDomainKey(ctx, "servir.gob.pe", "ed25519"); err != nil {
		log.Fatal(err)
	}
	return m, func() { m.Close(); os.RemoveAll(dir) }
}

func fixedNow() time.Time { return time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC) }

// Send one message: it is stored and charged before Send returns.
func ExampleMailer_Send() {
	m, done := exampleMailer(fixedNow)
	defer done()
	ctx := context.Background()
	r, err := m.Send(ctx, mailing.Message{
		Account: "sjti/talento",
		From:    "Talento Perú <avisos@servir.gob.pe>",
		To:      []string{"postulante@example.com"},
		Subject: "Su postulación fue recibida",
		Text:    "Gracias por postular.",
	})
	if err != nil {
		log.Fatal(err)
	}
	a, _ := m.Ledger().Account(ctx, "sjti/talento")
	fmt.Println(r.Recipients, r.Status, a.Remaining())
	// Output: 1 queued 49
}

// A personalised batch: each recipient gets its own message from the
// templates and its data; recipients whose data does not fit are reported.
func ExampleMailer_SendBatch() {
	m, done := exampleMailer(fixedNow)
	defer done()
	type postulante struct {
		Nombre, Puesto string
	}
	rec, err := m.SendBatch(context.Background(), mailing.Batch{
		Account: "sjti/talento",
		From:    "avisos@servir.gob.pe",
		Subject: "{{.Nombre}}: nueva convocatoria",
		Text:    "Hola {{.Nombre}}, hay una convocatoria para {{.Puesto}}.",
		HTML:    "<p>Hola {{.Nombre}}, hay una convocatoria para <b>{{.Puesto}}</b>.</p>",
		Recipients: mailing.List(
			mailing.Recipient{Address: "ana@example.com", Data: postulante{"Ana", "Analista"}},
			mailing.Recipient{Address: "luis@example.com", Data: postulante{"Luis", "Abogado"}},
			mailing.Recipient{Address: "eva@example.com", Data: map[string]string{"Nombre": "Eva"}},
		),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("accepted:", rec.Accepted)
	for _, r := range rec.Rejected {
		fmt.Println("rejected:", r.Address, errors.Is(r.Err, mailing.ErrContent))
	}
	// Output:
	// accepted: 2
	// rejected: eva@example.com true
}

// Schedule a message for later, then cancel it: its charge goes back.
func ExampleMailer_Cancel() {
	m, done := exampleMailer(fixedNow)
	defer done()
	ctx := context.Background()
	r, err := m.Send(ctx, mailing.Message{
		Account: "sjti/talento", From: "avisos@servir.gob.pe",
		To:      []string{"a@example.com", "b@example.com"},
		Subject: "Recordatorio", Text: "Mañana vence el plazo.",
		SendAt: fixedNow().Add(24 * time.Hour),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Status)
	c, err := m.Cancel(ctx, "sjti/talento", r.MessageID, "example")
	if err != nil {
		log.Fatal(err)
	}
	a, _ := m.Ledger().Account(ctx, "sjti/talento")
	fmt.Println(c.Cancelled, c.Released, a.Remaining())
	// Output:
	// scheduled
	// 2 2 50
}

// Retrying with the same idempotency key (after a timeout, say) never
// sends or charges twice: the retry returns the first message.
func ExampleMessage_idempotencyKey() {
	m, done := exampleMailer(fixedNow)
	defer done()
	ctx := context.Background()
	msg := mailing.Message{
		Account: "sjti/talento", From: "avisos@servir.gob.pe", To: []string{"a@example.com"},
		Subject: "Código de verificación", Text: "Su código es 123456.",
		IdempotencyKey: "otp-7f3a",
	}
	first, _ := m.Send(ctx, msg)
	retry, _ := m.Send(ctx, msg)
	a, _ := m.Ledger().Account(ctx, "sjti/talento")
	fmt.Println(retry.MessageID == first.MessageID, retry.Duplicate, a.Used)
	// Output: true true 1
}

// A refusal says what was wrong, about which field, in words fit for the
// sender; errors.Is matches its kind. Nothing was stored or charged.
func ExampleError() {
	m, done := exampleMailer(fixedNow)
	defer done()
	ctx := context.Background()
	for _, msg := range []mailing.Message{
		{Account: "sjti/talento", From: "avisos@servir.gob.pe", To: []string{"postulante"}, Subject: "Hola", Text: "x"},
		{Account: "sjti/talento", From: "otro@servir.gob.pe", To: []string{"a@example.com"}, Subject: "Hola", Text: "x"},
		{Account: "sjti/talento", From: "avisos@servir.gob.pe", To: []string{"a@example.com"}, Subject: "Hola\r\nBcc: x@evil.test", Text: "x"},
	} {
		_, err := m.Send(ctx, msg)
		var e *mailing.Error
		if errors.As(err, &e) {
			fmt.Printf("%s: %s (address: %v, sender: %v)\n", e.Field, e.Public,
				errors.Is(err, mailing.ErrAddress), errors.Is(err, mailing.ErrSenderNotAllowed))
		}
	}
	a, _ := m.Ledger().Account(ctx, "sjti/talento")
	fmt.Println("used:", a.Used)
	// Output:
	// to: "postulante": missing '@' or angle-addr (address: true, sender: false)
	// from: sjti/talento may not send as otro@servir.gob.pe (see relayd sender list sjti/talento) (address: false, sender: true)
	// subject: subject contains CR, LF or NUL (address: false, sender: false)
	// used: 0
}
