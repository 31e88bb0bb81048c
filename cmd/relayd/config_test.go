package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/servir-pe/envios/mailing"
)

func TestLoadConfig(t *testing.T) {
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "relayd.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := "sending_domain: envios.servir.gob.pe\ndelivery:\n  mode: smarthost\n  node: relay-1\n  smarthost:\n    addr: smtp.example.net:587\n" +
		"  retry:\n    base: 30s\n    max: 2h\n    max_age: 72h\n  limits:\n    gmail.com:\n      concurrency: 4\n      per_second: 8\n"
	c, err := loadConfig(write(good))
	if err != nil {
		t.Fatal(err)
	}
	var cfg mailing.EngineConfig
	c.Delivery.apply(&cfg)
	if c.Delivery.Smarthost.Addr != "smtp.example.net:587" || c.Delivery.Node != "relay-1" || cfg.RetryBase != 30*time.Second || cfg.MaxAge != 72*time.Hour ||
		cfg.Limits["gmail.com"] != (mailing.Limits{Concurrency: 4, PerSecond: 8}) {
		t.Fatalf("config %+v engine %+v", c, cfg)
	}
	for _, tt := range []struct{ body, want string }{
		{"sending_domain: x\ndelivery:\n  modee: direct\n", `line 3: unknown key "modee"`},
		{"delivery:\n  mode: carrier-pigeon\n", `delivery.mode "carrier-pigeon"`},
		{"delivery:\n  retry:\n    base: soon\n", "cannot unmarshal"},
		{"delivery:\n  limits:\n    gmail.com:\n      concurrency: 0\n      per_second: 1\n", "delivery.limits.gmail.com"},
	} {
		_, err := loadConfig(write(tt.body))
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: err = %v, want one line with %q", tt.body, err, tt.want)
		}
	}
	if _, err := loadConfig(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("a missing file was accepted")
	}
}

func TestExampleConfigLoads(t *testing.T) {
	c, err := loadConfig("../../examples/servir/relayd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.SendingDomain != "envios.servir.gob.pe" || c.DKIMKeyFile != "/etc/relayd/dkim.key" || c.Delivery.Retry.MaxAge != 120*time.Hour || c.Delivery.Limits["*"].PerSecond != 50 ||
		c.Delivery.MaxRcptPerTx != 100 {
		t.Fatalf("%+v", c)
	}
	l := c.Relay.Limits.relay()
	if c.API.HTTPS != ":8443" || c.API.HTTP != "off" || c.Relay.SMTP != ":587" || c.Relay.SMTPS != ":465" || c.Relay.Hostname != "relay.servir.gob.pe" || !c.Relay.HideClientAddress ||
		l.MaxMessageSize != 25<<20 || l.AuthFailures != 10 || l.AuthCache != 5*time.Minute || l.SessionTimeout != 30*time.Minute {
		t.Fatalf("relay section %+v", c.Relay)
	}
	if in := c.Inbound; in.Addr != "off" || in.MaxMessageSize != 10<<20 || in.MaxRecipients != 5 || in.ReadTimeout != 5*time.Minute || in.MaxConns != 200 {
		t.Fatalf("inbound section %+v", in)
	}
	if _, err := loadConfigString(t, "relay:\n  limits:\n    max_recipientz: 5\n"); err == nil || !strings.Contains(err.Error(), `line 3: unknown key "max_recipientz"`) {
		t.Fatalf("a misspelt relay limit: %v", err)
	}
}

func loadConfigString(t *testing.T, body string) (fileConfig, error) {
	p := filepath.Join(t.TempDir(), "relayd.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return loadConfig(p)
}
