package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/servir-pe/envios/internal/dkimkey"
	"github.com/servir-pe/envios/internal/rcpttoken"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/campaign"
	"github.com/servir-pe/envios/mailing/contacts"
	"github.com/uptrace/bun"
)

// runServe opens and migrates the database and, when a smarthost is
// configured, runs the delivery engine until SIGINT or SIGTERM, finishing
// the deliveries in flight. The SMTP relay and the HTTPS API join it as
// their issues land.
func runServe(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("serve", &g)
	var f serveFlags
	f.define(fs, e)
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	file, err := f.fillFromFile(fs, e)
	if err != nil {
		return err
	}
	if (*f.certFile == "") != (*f.keyFile == "") {
		return usagef("serve: --tls-cert and --tls-key go together")
	}
	if *f.hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		*f.hostname = h
	}
	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	db, err := e.open(ctx, &g, log)
	if err != nil {
		return err
	}
	defer db.Close()
	applied, err := store.Migrate(ctx, db)
	if err != nil {
		return err
	}
	for _, name := range applied {
		log.Info("applied migration", "name", name)
	}
	var unsignedDomains []string
	if *f.unsigned != "" {
		unsignedDomains = strings.Split(*f.unsigned, ",")
	}
	unsignedDomains = append(unsignedDomains, file.Delivery.UnsignedDomains...)
	idDomain := *f.sending
	if idDomain == "" {
		idDomain = *f.hostname
	}
	if *f.dkimKeyFile == "" {
		if err := refuseSealedKeys(ctx, db); err != nil {
			return err
		}
	}
	m, err := mailing.New(mailing.Config{DB: db, Now: e.now, Logger: log, MessageIDDomain: idDomain, DKIMKeyFile: *f.dkimKeyFile,
		UnsignedDomains: unsignedDomains, MaxMessageSize: file.Relay.Limits.MaxMessageSize, MaxRecipients: file.Relay.Limits.MaxRecipients})
	if err != nil {
		return err
	}
	engine, err := f.engine(ctx, e, m, file, unsignedDomains)
	if err != nil {
		return err
	}
	if *f.mxAddr != "off" && *f.mxAddr != "" && *f.sending == "" {
		return usagef("serve: --mx receives mail for the sending domain: give --sending-domain too")
	}
	tokens, err := recipientTokens(ctx, e, db, *f.dkimKeyFile)
	if err != nil {
		return err
	}
	imports := importJobs(e, &g, db, log)
	campaigns, err := campaign.New(campaign.Config{DB: db, Mailer: m, Segments: imports.Store, Now: e.now, Logger: log})
	if err != nil {
		return err
	}
	ctx, stopServe := context.WithCancel(ctx) // a delivery engine that cannot run stops relayd
	defer stopServe()
	ls, err := startListeners(ctx, e, &g, log, m, db, listenOptions{smtp: *f.smtpAddr, smtps: *f.smtpsAddr,
		https: *f.httpsAddr, http: *f.httpAddr, mx: *f.mxAddr, cert: *f.certFile, key: *f.keyFile, hostname: *f.hostname,
		hideClientAddress: file.Relay.HideClientAddress, limits: file.Relay.Limits.relay(), engine: engine,
		sendingDomain: *f.sending, tokens: tokens, inbound: file.Inbound, campaigns: campaigns, imports: imports})
	if err != nil {
		return err
	}
	log.Info("relayd ready", "db", store.Describe(g.dsn()), "timezone", g.loc.String(), "delivery", deliveryMode(*f.smarthost, *f.direct))
	wait := startWorkers(ctx, log, campaigns, imports, engine, stopServe)
	<-ctx.Done()
	log.Info("relayd stopping: finishing sessions and deliveries in flight")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	ls.shutdown(sctx, log)
	cancel()
	runErr := wait()
	if err := m.Close(); err != nil {
		log.Warn("mailer close", "err", err)
	}
	if runErr != nil {
		return runErr
	}
	log.Info("relayd stopped")
	return nil
}

// define puts serve's own flags on fs, their defaults from the environment.
func (f *serveFlags) define(fs *flag.FlagSet, e *env) {
	f.smarthost = fs.String("smarthost", e.getenv("RELAYD_SMARTHOST"), "deliver through this relay, host:port (env RELAYD_SMARTHOST)")
	f.user = fs.String("smarthost-user", e.getenv("RELAYD_SMARTHOST_USER"), "AUTH PLAIN user for the smarthost (env RELAYD_SMARTHOST_USER)")
	f.caFile = fs.String("smarthost-ca", "", "PEM file of CA certificates to trust for the smarthost (default: the system's)")
	f.plaintext = fs.Bool("smarthost-plaintext", false, "deliver even if the smarthost offers no STARTTLS (never with AUTH)")
	f.sending = fs.String("sending-domain", e.getenv("RELAYD_SENDING_DOMAIN"), "the dedicated sending domain for return paths and unsubscribe links (env RELAYD_SENDING_DOMAIN)")
	f.unsigned = fs.String("unsigned-domains", "", "comma-separated From domains that may be sent without a DKIM key")
	f.dkimKeyFile = dkimKeyFileFlag(fs, e)
	f.workers = fs.Int("workers", 8, "concurrent deliveries")
	f.node = fs.String("node", e.getenv("RELAYD_NODE"), "this node's name: the same across restarts, unique among running nodes; a restarted node takes back at once what it was delivering (env RELAYD_NODE; default: this host's name)")
	f.direct = fs.Bool("direct", false, "deliver to each domain's MX hosts instead of a smarthost")
	f.dnsServer = fs.String("dns-server", "", "with --direct: ask this DNS server (host:port) instead of the system's")
	f.mxPort = fs.String("mx-port", "25", "with --direct: the port MX hosts are reached on")
	f.helloName = fs.String("hello-name", "", "the name given in EHLO (default: this host's name with --direct, localhost with a smarthost)")
	f.configPath = fs.String("config", e.getenv("RELAYD_CONFIG"), "configuration file (env RELAYD_CONFIG)")
	f.smtpAddr = fs.String("smtp", envOr(e, "RELAYD_SMTP", ":587"), "submission with STARTTLS: listen address, or off (env RELAYD_SMTP)")
	f.smtpsAddr = fs.String("smtps", envOr(e, "RELAYD_SMTPS", ":465"), "submission over implicit TLS: listen address, or off (env RELAYD_SMTPS)")
	f.certFile = fs.String("tls-cert", e.getenv("RELAYD_TLS_CERT"), "PEM certificate (chain) for the relay; default: a self-signed one in the data directory (env RELAYD_TLS_CERT)")
	f.keyFile = fs.String("tls-key", e.getenv("RELAYD_TLS_KEY"), "PEM private key of --tls-cert (env RELAYD_TLS_KEY)")
	f.httpsAddr = fs.String("https", envOr(e, "RELAYD_HTTPS", ":8443"), "the HTTPS API: listen address, or off (env RELAYD_HTTPS)")
	f.httpAddr = fs.String("http", envOr(e, "RELAYD_HTTP", "off"), "the API without TLS, only for a trusted reverse proxy: listen address, or off (env RELAYD_HTTP)")
	f.mxAddr = fs.String("mx", envOr(e, "RELAYD_MX", "off"), "the MX of the sending domain (bounces, complaints, mailto unsubscribes): listen address, or off (env RELAYD_MX)")
	f.hostname = fs.String("hostname", e.getenv("RELAYD_HOSTNAME"), "the relay's name in its greeting and self-signed certificate (default: this host's name)")
}

// startWorkers starts the loops relayd serve runs beside its listeners,
// until ctx ends: campaigns are materialised (their recipients stored and
// charged) by every node, with or without delivery — what one node was
// doing when it died another takes over; the contact imports uploaded to
// this node run on it (their files are on its disk; stopping puts the
// running ones back in the queue); and the delivery engine, if any, whose
// failure to run (its node is already running) stops relayd: a node must
// not look as if it delivered. wait returns the engine's error once every
// loop has stopped.
func startWorkers(ctx context.Context, log *slog.Logger, campaigns *campaign.Store, imports *contacts.Jobs, engine *mailing.Engine,
	stop func()) (wait func() error) {
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() {
		if err := campaigns.Run(ctx); err != nil {
			log.Error("campaigns stopped", "err", err)
		}
	})
	wg.Go(func() {
		if err := imports.Run(ctx); err != nil {
			log.Error("contact imports stopped", "err", err)
		}
	})
	if engine != nil {
		wg.Go(func() {
			if err := engine.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				runErr = err
				stop()
			}
		})
	}
	return func() error { wg.Wait(); return runErr }
}

// serveFlags are serve's own flags.
type serveFlags struct {
	smarthost   *string
	user        *string
	caFile      *string
	plaintext   *bool
	sending     *string
	unsigned    *string
	dkimKeyFile *string
	workers     *int
	node        *string
	direct      *bool
	dnsServer   *string
	mxPort      *string
	helloName   *string
	configPath  *string
	smtpAddr    *string
	smtpsAddr   *string
	certFile    *string
	keyFile     *string
	httpsAddr   *string
	httpAddr    *string
	mxAddr      *string
	hostname    *string
}

// fillFromFile reads the configuration file, if one is named, and fills
// from it what the command line and environment left unset.
func (f *serveFlags) fillFromFile(fs *flag.FlagSet, e *env) (fileConfig, error) {
	var file fileConfig
	if *f.configPath == "" {
		return file, nil
	}
	file, err := loadConfig(*f.configPath)
	if err != nil {
		return file, err
	}
	// The file fills what the command line and environment left unset.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fill := func(dst *string, name, v string) {
		if !set[name] && *dst == "" && v != "" {
			*dst = v
		}
	}
	d := file.Delivery
	fill(f.sending, "sending-domain", file.SendingDomain)
	fill(f.dkimKeyFile, "dkim-key-file", file.DKIMKeyFile)
	if d.Mode == "smarthost" {
		fill(f.smarthost, "smarthost", d.Smarthost.Addr)
	}
	fill(f.user, "smarthost-user", d.Smarthost.User)
	fill(f.caFile, "smarthost-ca", d.Smarthost.CAFile)
	fill(f.dnsServer, "dns-server", d.Direct.DNSServer)
	fill(f.helloName, "hello-name", d.HelloName)
	if !set["mx-port"] && d.Direct.Port != "" {
		*f.mxPort = d.Direct.Port
	}
	if !set["direct"] && d.Mode == "direct" {
		*f.direct = true
	}
	if !set["smarthost-plaintext"] && d.Smarthost.AllowPlaintext {
		*f.plaintext = true
	}
	fill(f.node, "node", d.Node)
	if !set["workers"] && d.Workers > 0 {
		*f.workers = d.Workers
	}
	r := file.Relay
	fill(f.certFile, "tls-cert", r.TLSCert)
	fill(f.keyFile, "tls-key", r.TLSKey)
	fill(f.hostname, "hostname", r.Hostname)
	if !set["smtp"] && e.getenv("RELAYD_SMTP") == "" && r.SMTP != "" {
		*f.smtpAddr = r.SMTP
	}
	if !set["smtps"] && e.getenv("RELAYD_SMTPS") == "" && r.SMTPS != "" {
		*f.smtpsAddr = r.SMTPS
	}
	if !set["https"] && e.getenv("RELAYD_HTTPS") == "" && file.API.HTTPS != "" {
		*f.httpsAddr = file.API.HTTPS
	}
	if !set["http"] && e.getenv("RELAYD_HTTP") == "" && file.API.HTTP != "" {
		*f.httpAddr = file.API.HTTP
	}
	if !set["mx"] && e.getenv("RELAYD_MX") == "" && file.Inbound.Addr != "" {
		*f.mxAddr = file.Inbound.Addr
	}
	return file, nil
}

// engine is the delivery engine the flags ask for, or nil when relayd
// only accepts mail.
func (f *serveFlags) engine(ctx context.Context, e *env, m *mailing.Mailer, file fileConfig, unsignedDomains []string) (*mailing.Engine, error) {
	if *f.direct && *f.smarthost != "" {
		return nil, usagef("serve: --direct and --smarthost exclude each other")
	}
	if *f.smarthost != "" || *f.direct {
		if *f.sending == "" {
			return nil, usagef("serve: --sending-domain is required to deliver")
		}
		var transport mailing.Transport
		sh := &mailing.Smarthost{Addr: *f.smarthost, AllowPlaintext: *f.plaintext, Username: *f.user, Password: e.getenv("RELAYD_SMARTHOST_PASSWORD"), HelloName: *f.helloName}
		if *f.caFile != "" {
			pem, err := os.ReadFile(*f.caFile)
			if err != nil {
				return nil, fmt.Errorf("--smarthost-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--smarthost-ca: %s holds no PEM certificate", *f.caFile)
			}
			host := *f.smarthost
			if i := strings.LastIndexByte(host, ':'); i >= 0 {
				host = host[:i]
			}
			sh.TLS = &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
		}
		transport = sh
		if *f.direct {
			x := &mailing.DirectMX{Port: *f.mxPort, HelloName: *f.helloName}
			if *f.dnsServer != "" {
				x.Resolver = mailing.NewResolver(*f.dnsServer)
			}
			if sh.TLS != nil {
				x.RootCAs = sh.TLS.RootCAs
			}
			transport = x
		}
		cfg := mailing.EngineConfig{Transport: transport, ReturnPathDomain: *f.sending, Workers: *f.workers, Node: *f.node}
		file.Delivery.apply(&cfg)
		cfg.UnsignedDomains = unsignedDomains
		return m.NewEngine(ctx, cfg)
	}
	return nil, nil
}

// recipientTokens is the keyring of the recipient tokens (b+TOKEN@,
// u+TOKEN@, /u/TOKEN), opened with the key file when the secrets are sealed.
func recipientTokens(ctx context.Context, e *env, db *bun.DB, keyFile string) (*rcpttoken.Keyring, error) {
	var sealer *dkimkey.Sealer
	if keyFile != "" {
		var err error
		if sealer, err = dkimkey.OpenKeyFile(keyFile); err != nil {
			return nil, err
		}
	}
	return rcpttoken.Load(ctx, db, sealer, e.now())
}

// refuseSealedKeys fails when a DKIM key in use is sealed: without the
// key file it cannot sign, so say so now, not with every delivery deferred.
func refuseSealedKeys(ctx context.Context, db *bun.DB) error {
	keys, err := dkimkey.List(ctx, db)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.Sealed && k.Retired.IsZero() {
			return fmt.Errorf("serve: the DKIM key %s of %s is sealed: start with --dkim-key-file (or RELAYD_DKIM_KEY_FILE)", k.Selector, k.Domain)
		}
	}
	return nil
}

func deliveryMode(smarthost string, direct bool) string {
	switch {
	case direct:
		return "direct MX"
	case smarthost != "":
		return "smarthost " + smarthost
	}
	return "off (no --smarthost or --direct; mail stays queued)"
}

// importJobs runs the contact imports uploaded to this node. Their files
// wait in the directory imports beside the SQLite database, or on
// PostgreSQL in the data directory (--data-dir, default ./data): each node
// keeps the files it received and runs their imports itself, so that
// directory must persist across restarts (a queued import whose file is
// there runs at the next start).
func importJobs(e *env, g *globals, db *bun.DB, log *slog.Logger) *contacts.Jobs {
	dir := filepath.Join(g.dataDir, "imports")
	if store.EngineOf(g.dsn()) == store.SQLite {
		dir = filepath.Join(filepath.Dir(g.dsn()), "imports")
	}
	return &contacts.Jobs{Store: &contacts.Store{DB: db, Now: e.now}, Dir: dir, Logger: log}
}
