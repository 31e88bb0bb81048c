package main

import (
	"context"
	"errors"
	"fmt"
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

type relayOptions struct {
	smtp, smtps, cert, key, hostname string
	https, http                      string // the API's listen addresses, or off
	limits                           relay.Limits
}

func envOr(e *env, name, def string) string {
	if v := e.getenv(name); v != "" {
		return v
	}
	return def
}

// startRelay opens the submission listeners and serves them; it returns a
// nil server when both are off. It logs one machine-readable line per
// listener: msg=listening proto=smtp|smtps addr=HOST:PORT. SIGHUP reloads
// the certificate.
func startRelay(ctx context.Context, e *env, g *globals, log *slog.Logger, m *mailing.Mailer, db *bun.DB, o relayOptions) (*relay.Server, *http.Server, *sync.WaitGroup, error) {
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
		if srv, err = relay.New(relay.Config{Mailer: m, DB: db, TLS: holder.Config(), Hostname: o.hostname, Limits: o.limits, Logger: log, Now: e.now}); err != nil {
			return nil, nil, nil, err
		}
	}
	var hs *http.Server
	if !apiOff {
		api, err := httpapi.New(httpapi.Config{Mailer: m, Tokens: apitoken.NewStore(db, e.now),
			Reports: report.New(db, report.Config{Location: g.loc, Now: e.now}), Location: g.loc, Logger: log})
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
