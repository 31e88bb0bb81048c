package main

import (
	"math"
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
	if c.SendingDomain != "envios.servir.gob.pe" || c.DKIMKeyFile != "/etc/relayd/dkim.key" || c.Delivery.Retry.MaxAge != 120*time.Hour || len(c.Delivery.Limits) != 0 ||
		c.Delivery.MaxRcptPerTx != 100 {
		t.Fatalf("%+v", c)
	}
	// The example's delivery limits are the defaults, written out.
	sh := &mailing.Smarthost{Addr: "smtp.example.net:587"}
	cfg := mailing.EngineConfig{Transport: sh}
	c.Delivery.apply(&cfg)
	if cfg.Smarthost != (mailing.SmarthostLimits{Connections: 16}) || sh.MessagesPerConn != 100 || cfg.Adaptive != mailing.DefaultAdaptive() || cfg.WarmUp != nil {
		t.Fatalf("example delivery limits: smarthost %+v (%d per connection), adaptive %+v, warm-up %+v", cfg.Smarthost, sh.MessagesPerConn, cfg.Adaptive, cfg.WarmUp)
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

func TestLoadConfigDeliveryControl(t *testing.T) {
	body := "delivery:\n  smarthost:\n    addr: smtp.example.net:587\n    connections: 4\n    messages_per_connection: 50\n    per_second: 300\n" +
		"  adaptive:\n    start: {concurrency: 3, per_second: 10}\n    floor: {concurrency: 1, per_second: 0.5}\n    ceiling: {concurrency: 30, per_second: .inf}\n" +
		"    increase: 5\n    decrease: 0.7\n" +
		"  warmup:\n    start: 2026-12-07\n    timezone: America/Lima\n    groups:\n      google.com: {daily: [500, 1000], growth: 1.5, max: 100000}\n" +
		"      \"*\": {first: 200}\n"
	c, err := loadConfigString(t, body)
	if err != nil {
		t.Fatal(err)
	}
	sh := &mailing.Smarthost{Addr: c.Delivery.Smarthost.Addr}
	cfg := mailing.EngineConfig{Transport: sh}
	c.Delivery.apply(&cfg)
	if cfg.Smarthost != (mailing.SmarthostLimits{Connections: 4, PerSecond: 300}) || sh.MessagesPerConn != 50 {
		t.Fatalf("smarthost %+v, %d per connection", cfg.Smarthost, sh.MessagesPerConn)
	}
	a := cfg.Adaptive
	if a.Start != (mailing.Limits{Concurrency: 3, PerSecond: 10}) || a.Floor.PerSecond != 0.5 || a.Ceiling.Concurrency != 30 || !math.IsInf(a.Ceiling.PerSecond, 1) ||
		a.Increase != 5 || a.Decrease != 0.7 {
		t.Fatalf("adaptive %+v", a)
	}
	w := cfg.WarmUp
	if w == nil || w.Location.String() != "America/Lima" || w.Start.Format(time.DateOnly) != "2026-12-07" || w.Start.Location() != w.Location ||
		w.Groups["google.com"].Cap(1) != 1000 || w.Groups["google.com"].Cap(2) != 1500 || w.Groups["*"].Cap(9) != 200 {
		t.Fatalf("warm-up %+v", w)
	}
	for _, tt := range []struct{ body, want string }{
		{"delivery:\n  smarthost:\n    connectionz: 4\n", `line 3: unknown key "connectionz"`},
		{"delivery:\n  smarthost:\n    connections: -1\n", "delivery.smarthost"},
		{"delivery:\n  adaptive:\n    decrease: 1.5\n", "decrease between 0 and 1"},
		{"delivery:\n  adaptive:\n    floor: {per_second: -1}\n", "delivery.adaptive.floor"},
		{"delivery:\n  warmup:\n    start: someday\n", "delivery.warmup.start"},
		{"delivery:\n  warmup:\n    start: 2026-12-07\n    timezone: Mars/Olympus\n", "delivery.warmup.timezone"},
		{"delivery:\n  warmup:\n    start: 2026-12-07\n    groups:\n      google.com: {growth: 2}\n", "delivery.warmup.groups.google.com"},
		{"delivery:\n  warmup:\n    start: 2026-12-07\n    groups:\n      google.com: {firs: 2}\n", `unknown key "firs"`},
	} {
		_, err := loadConfigString(t, tt.body)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: err = %v, want one line with %q", tt.body, err, tt.want)
		}
	}
}

// The example's warm-up plan, commented out there, loads as written.
func TestExampleWarmUpLoads(t *testing.T) {
	raw, err := os.ReadFile("../../examples/servir/relayd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := false
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "  # warmup:") {
			in = true
		}
		if in && strings.HasPrefix(line, "  # ") && !strings.HasPrefix(line, "  # Bulk") && !strings.HasPrefix(line, "  # held") {
			line = "  " + strings.TrimPrefix(line, "  # ")
		} else if in {
			in = false
		}
		out = append(out, line)
	}
	c, err := loadConfigString(t, strings.Join(out, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg mailing.EngineConfig
	c.Delivery.apply(&cfg)
	if w := cfg.WarmUp; w == nil || len(w.Groups) != 3 || w.Groups["google.com"].Cap(0) != 500 || w.Groups["google.com"].Cap(5) != 15000 ||
		w.Groups["outlook.com"].Cap(1) != 600 || w.Groups["*"].Cap(100) != -1 {
		t.Fatalf("example warm-up plan %+v", cfg.WarmUp)
	}
}
