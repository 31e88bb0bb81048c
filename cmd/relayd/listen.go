package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/internal/feedback"
	"github.com/servir-pe/envios/internal/httpapi"
	"github.com/servir-pe/envios/internal/inbound"
	"github.com/servir-pe/envios/internal/rcpttoken"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/tlscert"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/campaign"
	"github.com/servir-pe/envios/mailing/contacts"
	"github.com/servir-pe/envios/relay"
	"github.com/servir-pe/envios/report"
)

type listenOptions struct {
	smtp, smtps, cert, key, hostname string
	https, http                      string // the API's listen addresses, or off
	mx                               string // the inbound MX's listen address, or off
	limits                           relay.Limits
	hideClientAddress                bool
	engine                           *mailing.Engine // for /metrics; nil without delivery
	sendingDomain                    string
	tokens                           *rcpttoken.Keyring
	inbound                          inboundConfig
	campaigns                        *campaign.Store
	imports                          *contacts.Jobs // contact imports; their Store serves /v1/lists and /v1/contacts
}

func envOr(e *env, name, def string) string {
	if v := e.getenv(name); v != "" {
		return v
	}
	return def
}

func isOff(addr string) bool { return addr == "off" || addr == "" }

// servers are what startListeners started; a server is nil when all its
// listeners are off.
type servers struct {
	relay    *relay.Server
	api      *http.Server
	mx       *inbound.Server
	feedback *feedback.Processor
	wg       sync.WaitGroup
}

// shutdown stops the servers, finishing what they are doing until ctx ends.
func (s *servers) shutdown(ctx context.Context, log *slog.Logger) {
	if s.relay != nil {
		if err := s.relay.Shutdown(ctx); err != nil {
			log.Warn("relay shutdown", "err", err)
		}
	}
	if s.api != nil {
		if err := s.api.Shutdown(ctx); err != nil {
			log.Warn("API shutdown", "err", err)
		}
	}
	if s.mx != nil {
		if err := s.mx.Shutdown(ctx); err != nil {
			log.Warn("MX shutdown", "err", err)
		}
	}
	s.wg.Wait()
}

// startListeners loads the certificate and serves the SMTP relay (smtp,
// smtps), the HTTPS API (https, and http behind a proxy) and the MX of the
// sending domain (mx) on the listeners not turned off. It logs one
// machine-readable line per listener:
// msg=listening proto=smtp|smtps|https|http|mx addr=HOST:PORT. SIGHUP
// reloads the certificate.
func startListeners(ctx context.Context, e *env, g *globals, log *slog.Logger, m *mailing.Mailer, db *bun.DB, o listenOptions) (*servers, error) {
	s := &servers{}
	smtpOff := isOff(o.smtp) && isOff(o.smtps)
	apiOff := isOff(o.https) && isOff(o.http)
	if smtpOff && apiOff && isOff(o.mx) {
		log.Info("relay, API and MX off")
		return s, nil
	}
	cert, key := o.cert, o.key
	if cert == "" {
		dir := g.dataDir
		if g.db != "" && store.EngineOf(g.db) == store.SQLite {
			dir = filepath.Dir(g.db)
		}
		var created bool
		var err error
		if cert, key, created, err = tlscert.SelfSigned(dir, o.hostname); err != nil {
			return nil, fmt.Errorf("self-signed certificate: %w", err)
		}
		if created {
			log.Warn("generated a self-signed TLS certificate; clients must trust it or use --tls-cert/--tls-key", "cert", cert, "key", key)
		} else {
			log.Info("using the self-signed TLS certificate", "cert", cert)
		}
	}
	holder, err := tlscert.Load(cert, key)
	if err != nil {
		return nil, err
	}
	if !smtpOff {
		if s.relay, err = relay.New(relay.Config{Mailer: m, DB: db, TLS: holder.Config(), Hostname: o.hostname, HideClientAddress: o.hideClientAddress, Limits: o.limits, Logger: log, Now: e.now}); err != nil {
			return nil, err
		}
	}
	if !isOff(o.mx) {
		s.feedback = &feedback.Processor{DB: db, Tokens: o.tokens, Now: e.now, Logger: log}
		if o.engine != nil { // a policy bounce reported later pauses bulk mail as one during delivery does
			s.feedback.OnPolicy = o.engine.PauseBulk
		}
		in := o.inbound
		if s.mx, err = inbound.New(inbound.Config{DB: db, Tokens: o.tokens, Domain: o.sendingDomain, Processor: s.feedback, TLS: holder.Config(),
			Hostname: o.hostname, MaxMessageSize: in.MaxMessageSize, MaxRecipients: in.MaxRecipients, ReadTimeout: in.ReadTimeout,
			MaxConns: in.MaxConns, Logger: log, Now: e.now}); err != nil {
			return nil, err
		}
	}
	if !apiOff {
		api, err := httpapi.New(httpapi.Config{Mailer: m, DB: db, Now: e.now, Tokens: apitoken.NewStore(db, e.now), RecipientTokens: o.tokens,
			Reports: report.New(db, report.Config{Location: g.loc, Now: e.now}), Location: g.loc, Logger: log, Campaigns: o.campaigns,
			Contacts: o.imports.Store, Imports: o.imports,
			Metrics: func(w io.Writer) { processMetrics(w, s, o.engine) }})
		if err != nil {
			return nil, err
		}
		s.api = &http.Server{Handler: api.Handler(), TLSConfig: holder.Config(), ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout: 5 * time.Minute, IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	}
	if err := s.listen(log, o); err != nil {
		return nil, err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	s.wg.Go(func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-hup:
				if err := holder.Reload(); err != nil {
					log.Error("certificate reload failed; keeping the current one", "err", err)
				} else {
					log.Info("certificate reloaded", "cert", cert)
				}
			case <-ctx.Done():
				return
			}
		}
	})
	return s, nil
}

// listen opens every listener not turned off (all or none) and serves them.
func (s *servers) listen(log *slog.Logger, o listenOptions) error {
	type listener struct {
		proto string
		l     net.Listener
		serve func(net.Listener) error
	}
	var ls []listener
	for _, x := range []struct {
		proto, addr string
		serve       func(net.Listener) error
	}{{"smtp", o.smtp, nil}, {"smtps", o.smtps, nil}, {"https", o.https, nil}, {"http", o.http, nil}, {"mx", o.mx, nil}} {
		if isOff(x.addr) {
			continue
		}
		switch x.proto {
		case "smtp":
			x.serve = s.relay.Serve
		case "smtps":
			x.serve = s.relay.ServeTLS
		case "https":
			x.serve = func(l net.Listener) error { return s.api.ServeTLS(l, "", "") }
		case "http":
			log.Warn("the API also listens without TLS: only for a trusted reverse proxy on this host", "addr", x.addr)
			x.serve = s.api.Serve
		case "mx":
			x.serve = s.mx.Serve
		}
		l, err := net.Listen("tcp", x.addr)
		if err != nil {
			for _, o := range ls {
				o.l.Close()
			}
			return fmt.Errorf("--%s %s: %w", x.proto, x.addr, err)
		}
		ls = append(ls, listener{x.proto, l, x.serve})
	}
	for _, x := range ls {
		log.Info("listening", "proto", x.proto, "addr", x.l.Addr().String())
		s.wg.Go(func() {
			err := x.serve(x.l)
			if err != nil && !errors.Is(err, relay.ErrServerClosed) && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, inbound.ErrServerClosed) {
				log.Error("stopped serving", "proto", x.proto, "err", err)
			}
		})
	}
	return nil
}

// metric writes one Prometheus sample with its HELP and TYPE lines.
func metric(w io.Writer, name, kind, help string, v int64) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %d\n", name, help, name, kind, name, v)
}

// processMetrics writes this process's metrics (Prometheus text format):
// the relay's connections and failed logins, the engine's outcomes and
// delivery latency.
func processMetrics(w io.Writer, s *servers, eng *mailing.Engine) {
	if s.relay != nil {
		st := s.relay.Stats()
		metric(w, "envios_smtp_connections_total", "counter", "SMTP connections accepted by this relay.", st.Connections)
		metric(w, "envios_smtp_connections_refused_total", "counter", "SMTP connections refused over a connection limit.", st.Refused)
		metric(w, "envios_smtp_sessions", "gauge", "SMTP connections open now.", st.Active)
		metric(w, "envios_smtp_auth_failures_total", "counter", "Failed SMTP AUTH attempts.", st.AuthFailures)
		metric(w, "envios_smtp_password_checks_total", "counter",
			"argon2id password verifications run (cached and shared logins run none).", st.PasswordChecks)
	}
	if s.mx != nil {
		st, fb := s.mx.Stats(), s.feedback.Stats()
		metric(w, "envios_mx_connections_total", "counter", "Connections to the MX of the sending domain.", st.Connections)
		metric(w, "envios_mx_stored_total", "counter", "Inbound messages stored (one per accepted recipient).", st.Stored)
		metric(w, "envios_mx_refused_total", "counter", "Inbound recipients refused (bad token, other domain).", st.Refused)
		fmt.Fprintln(w, "# HELP envios_feedback_total What inbound messages did, by kind.")
		fmt.Fprintln(w, "# TYPE envios_feedback_total counter")
		for _, k := range []struct {
			kind string
			n    int64
		}{{"bounced", fb.Bounced}, {"delayed", fb.Delayed}, {"complained", fb.Complaints}, {"unsubscribed", fb.Unsubscribes},
			{"policy", fb.Policy}, {"ignored", fb.Ignored}} {
			fmt.Fprintf(w, "envios_feedback_total{kind=%q} %d\n", k.kind, k.n)
		}
	}
	if eng != nil {
		st := eng.Stats()
		fmt.Fprintln(w, "# HELP envios_delivery_policy_refusals_total 5xx policy refusals (reputation, DMARC, PTR) by destination domain: each raised an alarm and paused bulk mail to it.")
		fmt.Fprintln(w, "# TYPE envios_delivery_policy_refusals_total counter")
		for _, d := range slices.Sorted(maps.Keys(st.PolicyRefusals)) {
			fmt.Fprintf(w, "envios_delivery_policy_refusals_total{domain=%q} %d\n", d, st.PolicyRefusals[d])
		}
		fmt.Fprintln(w, "# HELP envios_delivery_outcomes_total Recipients this engine recorded, by the status they got.")
		fmt.Fprintln(w, "# TYPE envios_delivery_outcomes_total counter")
		for _, s := range []mailing.Status{mailing.StatusSent, mailing.StatusDeferred, mailing.StatusBounced, mailing.StatusFailed} {
			fmt.Fprintf(w, "envios_delivery_outcomes_total{status=%q} %d\n", s, st.Outcomes[s])
		}
		fmt.Fprintln(w, "# HELP envios_delivery_latency_seconds From acceptance to the 2xx reply, for the recipients this engine sent.")
		fmt.Fprintln(w, "# TYPE envios_delivery_latency_seconds histogram")
		for i, b := range mailing.LatencyBuckets {
			fmt.Fprintf(w, "envios_delivery_latency_seconds_bucket{le=\"%g\"} %d\n", b, st.Buckets[i])
		}
		fmt.Fprintf(w, "envios_delivery_latency_seconds_bucket{le=\"+Inf\"} %d\n", st.Count)
		fmt.Fprintf(w, "envios_delivery_latency_seconds_sum %.3f\n", st.SumSeconds)
		fmt.Fprintf(w, "envios_delivery_latency_seconds_count %d\n", st.Count)
		st.WriteDestinationMetrics(w)
	}
}
