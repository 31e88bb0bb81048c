// Command smtpload drives an SMTP submission server with concurrent
// authenticated connections and prints the accepted messages per second
// (package internal/smtpload). Example, against a local relayd:
//
//	go run ./internal/cmd/smtpload --addr 127.0.0.1:2587 --user U --password P \
//	    --from avisos@servir.gob.pe --to 'dest%d@example.org' --conns 32 --messages 20000 --size 5120 --insecure
//
// --shape chooses the messages: plain (the default: a text body of --size
// bytes), multipart (a personalised multipart/alternative text and HTML
// notification of about --size bytes) or pdf (that notification with a
// 100 KB PDF attached). --ceiling runs the same load against a bare
// go-smtp server started in this process (STARTTLS, AUTH PLAIN, every
// message read and discarded) before and after the server, and prints the
// server's rate as a share of that ceiling; with --addr "" only the
// ceiling is measured.
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
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:587", `server host:port ("" with --ceiling: the ceiling alone)`)
	flag.BoolVar(&cfg.ImplicitTLS, "tls", false, "implicit TLS (port 465) instead of STARTTLS")
	flag.StringVar(&cfg.Username, "user", "", "AUTH PLAIN username")
	flag.StringVar(&cfg.Password, "password", os.Getenv("SMTPLOAD_PASSWORD"), "AUTH PLAIN password (env SMTPLOAD_PASSWORD)")
	flag.StringVar(&cfg.From, "from", "", "envelope and header sender")
	flag.StringVar(&cfg.To, "to", "", "recipient; %d is replaced by the message number")
	flag.IntVar(&cfg.Conns, "conns", 32, "concurrent connections")
	flag.IntVar(&cfg.Messages, "messages", 10000, "messages in all")
	flag.IntVar(&cfg.Size, "size", 5120, "message size in bytes (pdf: without the attachment)")
	shape := flag.String("shape", string(smtpload.Plain), "messages: plain, multipart or pdf")
	ceiling := flag.Bool("ceiling", false, "also measure a bare go-smtp sink in this process, before and after the server, and print the ratio")
	ca := flag.String("ca", "", "PEM file of the server's certificate or CA")
	insecure := flag.Bool("insecure", false, "do not verify the server's certificate")
	flag.Parse()
	cfg.Shape = smtpload.Shape(*shape)
	if cfg.From == "" || cfg.To == "" || (cfg.Addr == "" && !*ceiling) {
		fmt.Fprintln(os.Stderr, "smtpload: --from and --to are required, and --addr unless --ceiling")
		os.Exit(2)
	}
	if _, err := smtpload.NewGenerator(cfg.Shape, cfg.Size); err != nil {
		fmt.Fprintln(os.Stderr, "smtpload:", err)
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
	if !*ceiling {
		res, err := smtpload.Run(ctx, cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "smtpload:", err)
			os.Exit(1)
		}
		fmt.Println(res)
		return
	}
	if err := compare(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "smtpload:", err)
		os.Exit(1)
	}
}

// compare measures the ceiling, then the server at cfg.Addr (unless it is
// ""), then the ceiling again, so that a machine whose speed drifts during
// the server's run weighs on both sides, and prints the server's rate as
// a share of the two ceiling runs' mean.
func compare(ctx context.Context, cfg smtpload.Config) error {
	before, err := smtpload.RunCeiling(ctx, cfg)
	if err != nil {
		return fmt.Errorf("ceiling: %w", err)
	}
	fmt.Printf("ceiling (bare go-smtp sink), %s, before: %v\n", cfg.Shape, before)
	if cfg.Addr == "" {
		return nil
	}
	server, err := smtpload.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Printf("server %s, %s: %v\n", cfg.Addr, cfg.Shape, server)
	after, err := smtpload.RunCeiling(ctx, cfg)
	if err != nil {
		return fmt.Errorf("ceiling: %w", err)
	}
	fmt.Printf("ceiling (bare go-smtp sink), %s, after: %v\n", cfg.Shape, after)
	mean := (before.Rate() + after.Rate()) / 2
	fmt.Printf("ratio: %.1f%% of the ceiling (%.0f msg/s against %.0f, the mean of %.0f and %.0f)\n",
		100*server.Rate()/mean, server.Rate(), mean, before.Rate(), after.Rate())
	return nil
}
