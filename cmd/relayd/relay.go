package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/tlscert"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/relay"
)

type relayOptions struct {
	smtp, smtps, cert, key, hostname string
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
func startRelay(ctx context.Context, e *env, g *globals, log *slog.Logger, m *mailing.Mailer, db *bun.DB, o relayOptions) (*relay.Server, *sync.WaitGroup, error) {
	var wg sync.WaitGroup
	if o.smtp == "off" && o.smtps == "off" {
		log.Info("relay off (--smtp off --smtps off)")
		return nil, &wg, nil
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
			return nil, nil, fmt.Errorf("self-signed certificate: %w", err)
		}
		if created {
			log.Warn("generated a self-signed TLS certificate; clients must trust it or use --tls-cert/--tls-key", "cert", cert, "key", key)
		} else {
			log.Info("using the self-signed TLS certificate", "cert", cert)
		}
	}
	holder, err := tlscert.Load(cert, key)
	if err != nil {
		return nil, nil, err
	}
	srv, err := relay.New(relay.Config{Mailer: m, DB: db, TLS: holder.Config(), Hostname: o.hostname, Limits: o.limits, Logger: log, Now: e.now})
	if err != nil {
		return nil, nil, err
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
	}{{"smtp", o.smtp, srv.Serve}, {"smtps", o.smtps, srv.ServeTLS}} {
		if x.addr == "off" || x.addr == "" {
			continue
		}
		l, err := net.Listen("tcp", x.addr)
		if err != nil {
			for _, o := range ls {
				o.l.Close()
			}
			return nil, nil, fmt.Errorf("--%s %s: %w", x.proto, x.addr, err)
		}
		ls = append(ls, listener{x.proto, l, x.serve})
	}
	for _, x := range ls {
		log.Info("listening", "proto", x.proto, "addr", x.l.Addr().String())
		wg.Go(func() {
			if err := x.serve(x.l); err != nil && !errors.Is(err, relay.ErrServerClosed) {
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
	return srv, &wg, nil
}
