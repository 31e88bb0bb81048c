// Command smtpload drives an SMTP submission server with concurrent
// authenticated connections and prints the accepted messages per second
// (package internal/smtpload). Example, against a local relayd:
//
//	go run ./internal/cmd/smtpload --addr 127.0.0.1:2587 --user U --password P \
//	    --from avisos@servir.gob.pe --to 'dest%d@example.org' --conns 32 --messages 20000 --size 5120 --insecure
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/servir-pe/envios/internal/smtpload"
)

func main() {
	var cfg smtpload.Config
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:587", "server host:port")
	flag.BoolVar(&cfg.ImplicitTLS, "tls", false, "implicit TLS (port 465) instead of STARTTLS")
	flag.StringVar(&cfg.Username, "user", "", "AUTH PLAIN username")
	flag.StringVar(&cfg.Password, "password", os.Getenv("SMTPLOAD_PASSWORD"), "AUTH PLAIN password (env SMTPLOAD_PASSWORD)")
	flag.StringVar(&cfg.From, "from", "", "envelope and header sender")
	flag.StringVar(&cfg.To, "to", "", "recipient; %d is replaced by the message number")
	flag.IntVar(&cfg.Conns, "conns", 32, "concurrent connections")
	flag.IntVar(&cfg.Messages, "messages", 10000, "messages in all")
	flag.IntVar(&cfg.Size, "size", 5120, "message size in bytes")
	ca := flag.String("ca", "", "PEM file of the server's certificate or CA")
	insecure := flag.Bool("insecure", false, "do not verify the server's certificate")
	flag.Parse()
	if cfg.From == "" || cfg.To == "" {
		fmt.Fprintln(os.Stderr, "smtpload: --from and --to are required")
		os.Exit(2)
	}
	cfg.TLS = &tls.Config{InsecureSkipVerify: *insecure, MinVersion: tls.VersionTLS12} //nolint:gosec // a benchmark flag, off by default
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			fmt.Fprintln(os.Stderr, "smtpload:", err)
			os.Exit(1)
		}
		cfg.TLS.RootCAs = x509.NewCertPool()
		cfg.TLS.RootCAs.AppendCertsFromPEM(pem)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := smtpload.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "smtpload:", err)
		os.Exit(1)
	}
	fmt.Println(res)
}
