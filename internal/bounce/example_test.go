package bounce_test

import (
	"fmt"

	"github.com/servir-pe/envios/internal/bounce"
)

func ExampleClassify() {
	// A synchronous reply during delivery.
	fmt.Println(bounce.Classify(550, "5.1.1", "The email account that you tried to reach does not exist"))
	// A Gmail reputation block: our problem, never the recipient's.
	fmt.Println(bounce.Classify(550, "5.7.1", "Our system has detected that this message is likely unsolicited mail"))
	// A DSN Status with a comment; the Diagnostic-Code holds the real code.
	fmt.Println(bounce.Classify(0, "5.0.0 (permanent failure)", "smtp; 550 5.2.2 <a@example.com>... Mailbox Full"))
	c := bounce.Classify(421, "4.7.0", "Try again later")
	fmt.Println(c, c.Suppresses())
	// Output:
	// hard
	// policy
	// transient
	// policy false
}

func ExampleRead() {
	raw := []byte("From: MAILER-DAEMON@mx.example.net\n" +
		"Subject: Undelivered Mail Returned to Sender\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n" +
		"\n--b\nContent-Type: text/plain\n\nYour message could not be delivered.\n" +
		"--b\nContent-Type: message/delivery-status\n\n" +
		"Reporting-MTA: dns; mx.example.net\n\n" +
		"Final-Recipient: rfc822; ana@Example.NET\nAction: failed\nStatus: 5.0.0 (permanent failure)\n" +
		"Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist\n" +
		"--b\nContent-Type: text/rfc822-headers\n\n" +
		"Return-Path: <b+1b-mvxhm2lpomwxi33l@bounces.example.gob.pe>\n" +
		"--b--\n")
	r, err := bounce.Read(raw)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.Kind, r.ReportingMTA, r.Tokens)
	for _, rc := range r.Recipients {
		fmt.Println(rc.Final, rc.Action, rc.Status, rc.Code, rc.Class)
	}
	// Output:
	// dsn mx.example.net [1b-mvxhm2lpomwxi33l]
	// ana@example.net failed 5.1.1 550 hard
}
