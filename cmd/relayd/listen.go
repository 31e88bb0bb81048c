package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/internal/httpapi"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/tlscert"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/relay"
	"github.com/servir-pe/envios/report"
)

type listenOptions struct {
	smtp, smtps, cert, key, hostname string
	https, http                      string // the API's listen addresses, or off
	limits                           relay.Limits
	hideClientAddress                bool
	engine                           *mailing.Engine // for /metrics; nil without delivery
}

func envOr(e *env, name, def string) string {
	if v := e.getenv(name); v != "" {
		return v
	}
	return def
}

// startListeners loads the certificate and serves the SMTP relay (smtp,
// smtps) and the HTTPS API (https, and http behind a proxy) on the
// listeners not turned off; a server is nil when all its listeners are
// off. It logs one machine-readable line per listener:
// msg=listening proto=smtp|smtps|https|http addr=HOST:PORT. SIGHUP reloads
// the certificate.
func startListeners(ctx context.Context, e *env, g *globals, log *slog.Logger, m *mailing.Mailer, db *bun.DB, o listenOptions) (*relay.Server, *http.Server, *sync.WaitGroup, error) {
	var wg sync.WaitGroup
	smtpOff := o.smtp == "off" && o.smtps == "off"
	apiOff := (o.https == "off" || o.https == "") && (o.http == "off" || o.http == "")
	if smtpOff && apiOff {
		log.Info("relay and API off")
		return nil, nil, &wg, nil
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
			return nil, nil, nil, fmt.Errorf("self-signed certificate: %w", err)
		}
		if created {
			log.Warn("generated a self-signed TLS certificate; clients must trust it or use --tls-cert/--tls-key", "cert", cert, "key", key)
		} else {
			log.Info("using the self-signed TLS certificate", "cert", cert)
		}
	}
	holder, err := tlscert.Load(cert, key)
	if err != nil {
		return nil, nil, nil, err
	}
	var srv *relay.Server
	if !smtpOff {
		if srv, err = relay.New(relay.Config{Mailer: m, DB: db, TLS: holder.Config(), Hostname: o.hostname, HideClientAddress: o.hideClientAddress, Limits: o.limits, Logger: log, Now: e.now}); err != nil {
			return nil, nil, nil, err
		}
	}
	var hs *http.Server
	if !apiOff {
		api, err := httpapi.New(httpapi.Config{Mailer: m, DB: db, Now: e.now, Tokens: apitoken.NewStore(db, e.now),
			Reports: report.New(db, report.Config{Location: g.loc, Now: e.now}), Location: g.loc, Logger: log,
			Metrics: func(w io.Writer) { processMetrics(w, srv, o.engine) }})
		if err != nil {
			return nil, nil, nil, err
		}
		hs = &http.Server{Handler: api.Handler(), TLSConfig: holder.Config(), ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout: 5 * time.Minute, IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	}
	type listener struct {
		proto string
		l     net.Listener
		serve func(net.Listener) error
	}
	var ls []listener
	for _, x := range []struct {
		proto, addr string
		serve       func(net.Listener) error
	}{{"smtp", o.smtp, nil}, {"smtps", o.smtps, nil}, {"https", o.https, nil}, {"http", o.http, nil}} {
		if x.addr == "off" || x.addr == "" {
			continue
		}
		switch x.proto {
		case "smtp":
			x.serve = srv.Serve
		case "smtps":
			x.serve = srv.ServeTLS
		case "https":
			x.serve = func(l net.Listener) error { return hs.ServeTLS(l, "", "") }
		case "http":
			log.Warn("the API also listens without TLS: only for a trusted reverse proxy on this host", "addr", x.addr)
			x.serve = hs.Serve
		}
		l, err := net.Listen("tcp", x.addr)
		if err != nil {
			for _, o := range ls {
				o.l.Close()
			}
			return nil, nil, nil, fmt.Errorf("--%s %s: %w", x.proto, x.addr, err)
		}
		ls = append(ls, listener{x.proto, l, x.serve})
	}
	for _, x := range ls {
		log.Info("listening", "proto", x.proto, "addr", x.l.Addr().String())
		wg.Go(func() {
			if err := x.serve(x.l); err != nil && !errors.Is(err, relay.ErrServerClosed) && !errors.Is(err, http.ErrServerClosed) {
				log.Error("relay stopped serving", "proto", x.proto, "err", err)
			}
		})
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	wg.Go(func() {
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
	return srv, hs, &wg, nil
}

// metric writes one Prometheus sample with its HELP and TYPE lines.
func metric(w io.Writer, name, kind, help string, v int64) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %d\n", name, help, name, kind, name, v)
}

// processMetrics writes this process's metrics (Prometheus text format):
// the relay's connections and failed logins, the engine's outcomes and
// delivery latency.
func processMetrics(w io.Writer, srv *relay.Server, eng *mailing.Engine) {
	if srv != nil {
		st := srv.Stats()
		metric(w, "envios_smtp_connections_total", "counter", "SMTP connections accepted by this relay.", st.Connections)
		metric(w, "envios_smtp_connections_refused_total", "counter", "SMTP connections refused over a connection limit.", st.Refused)
		metric(w, "envios_smtp_sessions", "gauge", "SMTP connections open now.", st.Active)
		metric(w, "envios_smtp_auth_failures_total", "counter", "Failed SMTP AUTH attempts.", st.AuthFailures)
		metric(w, "envios_smtp_password_checks_total", "counter",
			"argon2id password verifications run (cached and shared logins run none).", st.PasswordChecks)
	}
	if eng != nil {
		st := eng.Stats()
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
	}
}
