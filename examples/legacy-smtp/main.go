// Command legacy-smtp is what a legacy system does to send through relayd:
// nothing envios-specific, only plain SMTP with the four settings every
// mail library has — host, port, username, password — over STARTTLS (port
// 587) or implicit TLS (port 465), with AUTH PLAIN.
//
//	relayd credential add sjti/talento --name "sistema de talento"   # prints the username and password
//	go run ./examples/legacy-smtp --host relay.servir.gob.pe --port 587 \
//	    --user talento.k3x9q2 --password '…' --from avisos@servir.gob.pe --to ana@example.org
//
// The optional X-Envios- header fields (campaign, priority, scheduling,
// idempotency key) show how such a system reaches the library's features
// without changing its mail code; relayd removes them before delivery.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"strings"
	"time"
)

func main() {
	host := flag.String("host", "localhost", "relayd's host name")
	port := flag.String("port", "587", "587 (STARTTLS) or 465 (implicit TLS)")
	user := flag.String("user", "", "the credential's username (relayd credential add)")
	password := flag.String("password", os.Getenv("SMTP_PASSWORD"), "its password (or SMTP_PASSWORD)")
	from := flag.String("from", "", "a sender identity of the credential's account")
	to := flag.String("to", "", "comma-separated recipients")
	subject := flag.String("subject", "Aviso de prueba", "the subject")
	campaign := flag.String("campaign", "", "X-Envios-Campaign, for reports (optional)")
	ca := flag.String("ca", "", "PEM file of relayd's certificate, when it is self-signed")
	flag.Parse()
	if *user == "" || *from == "" || *to == "" {
		fmt.Fprintln(os.Stderr, "legacy-smtp: --user, --from and --to are required")
		os.Exit(2)
	}
	tlsConfig := &tls.Config{ServerName: *host, MinVersion: tls.VersionTLS12}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			fail(err)
		}
		tlsConfig.RootCAs = x509.NewCertPool()
		tlsConfig.RootCAs.AppendCertsFromPEM(pem)
	}
	addr := net.JoinHostPort(*host, *port)
	var c *smtp.Client
	var err error
	if *port == "465" {
		conn, err := tls.Dial("tcp", addr, tlsConfig)
		if err != nil {
			fail(err)
		}
		c, err = smtp.NewClient(conn, *host)
		if err != nil {
			fail(err)
		}
	} else {
		if c, err = smtp.Dial(addr); err != nil {
			fail(err)
		}
		if err := c.StartTLS(tlsConfig); err != nil {
			fail(err)
		}
	}
	defer c.Close()
	if err := c.Auth(smtp.PlainAuth("", *user, *password, *host)); err != nil {
		fail(err)
	}
	rcpts := strings.Split(*to, ",")
	if err := c.Mail(*from); err != nil {
		fail(err)
	}
	for _, r := range rcpts {
		if err := c.Rcpt(strings.TrimSpace(r)); err != nil {
			fail(err)
		}
	}
	w, err := c.Data()
	if err != nil {
		fail(err)
	}
	msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: text/plain; charset=utf-8\r\n", *from, strings.Join(rcpts, ", "), *subject, time.Now().Format(time.RFC1123Z))
	if *campaign != "" {
		msg += "X-Envios-Campaign: " + *campaign + "\r\n"
	}
	msg += "\r\nEste mensaje salió de un sistema antiguo por SMTP.\r\n"
	if _, err := w.Write([]byte(msg)); err != nil {
		fail(err)
	}
	if err := w.Close(); err != nil { // relayd answers 250 only once the message is committed and charged
		fail(err)
	}
	if err := c.Quit(); err != nil {
		fail(err)
	}
	fmt.Printf("accepted: %d recipient(s)\n", len(rcpts))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "legacy-smtp:", err)
	os.Exit(1)
}
