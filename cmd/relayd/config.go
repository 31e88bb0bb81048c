package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/relay"
)

// fileConfig is relayd serve's configuration file (--config, RELAYD_CONFIG).
// Unknown keys are errors. Flags given on the command line win over it.
type fileConfig struct {
	SendingDomain string         `yaml:"sending_domain"`
	DKIMKeyFile   string         `yaml:"dkim_key_file"` // seals the DKIM private keys (relayd domain keyfile)
	Delivery      deliveryConfig `yaml:"delivery"`
	Relay         relayConfig    `yaml:"relay"`
	API           struct {
		HTTPS string `yaml:"https"` // listen address of the HTTPS API, or off
		HTTP  string `yaml:"http"`  // plain HTTP, only behind a trusted reverse proxy; default off
	} `yaml:"api"`
	Inbound inboundConfig `yaml:"inbound"`
}

// inboundConfig is the MX of the sending domain (bounces, complaints,
// mailto unsubscribes).
type inboundConfig struct {
	Addr           string        `yaml:"addr"`             // listen address (port 25 in production), or off; default off
	MaxMessageSize int64         `yaml:"max_message_size"` // default 10 MiB
	MaxRecipients  int           `yaml:"max_recipients"`   // per transaction; default 5
	ReadTimeout    time.Duration `yaml:"read_timeout"`     // default 5m
	MaxConns       int           `yaml:"max_conns"`        // default 200
}

// relayConfig is the submission relay's part of the file.
type relayConfig struct {
	SMTP     string `yaml:"smtp"`  // listen address with STARTTLS, or off
	SMTPS    string `yaml:"smtps"` // listen address with implicit TLS, or off
	TLSCert  string `yaml:"tls_cert"`
	TLSKey   string `yaml:"tls_key"`
	Hostname string `yaml:"hostname"`
	// HideClientAddress leaves clients' IP addresses out of the Received
	// field added to each message.
	HideClientAddress bool        `yaml:"hide_client_address"`
	Limits            relayLimits `yaml:"limits"`
}

type relayLimits struct {
	MaxMessageSize int           `yaml:"max_message_size"`
	MaxRecipients  int           `yaml:"max_recipients"`
	MaxLineLength  int           `yaml:"max_line_length"`
	MaxHeaderBytes int           `yaml:"max_header_bytes"`
	MaxHeaders     int           `yaml:"max_headers"`
	ReadTimeout    time.Duration `yaml:"read_timeout"`
	WriteTimeout   time.Duration `yaml:"write_timeout"`
	SessionTimeout time.Duration `yaml:"session_timeout"`
	MaxConns       int           `yaml:"max_conns"`
	MaxConnsPerIP  int           `yaml:"max_conns_per_ip"`
	AuthDelay      time.Duration `yaml:"auth_delay"`
	AuthFailures   int           `yaml:"auth_failures"`
	AuthWindow     time.Duration `yaml:"auth_window"`
	AuthCache      time.Duration `yaml:"auth_cache"`
	DataMemory     int64         `yaml:"data_memory"`
}

type deliveryConfig struct {
	Mode      string `yaml:"mode"` // smarthost | direct | off
	HelloName string `yaml:"hello_name"`
	Smarthost struct {
		Addr           string `yaml:"addr"`
		User           string `yaml:"user"`
		CAFile         string `yaml:"ca_file"`
		AllowPlaintext bool   `yaml:"allow_plaintext"`
		// The smarthost's limits: it, not relayd, faces the recipient domains.
		Connections     int     `yaml:"connections"`             // transactions at once; default 16
		MessagesPerConn int     `yaml:"messages_per_connection"` // default 100
		PerSecond       float64 `yaml:"per_second"`              // default 0: unlimited
	} `yaml:"smarthost"`
	Direct struct {
		DNSServer string `yaml:"dns_server"`
		Port      string `yaml:"port"`
	} `yaml:"direct"`
	Node            string        `yaml:"node"` // this node's name across restarts; default the host name
	Workers         int           `yaml:"workers"`
	Batch           int           `yaml:"batch"`
	MaxRcptPerTx    int           `yaml:"max_recipients_per_transaction"`
	Lease           time.Duration `yaml:"lease"`
	UnsignedDomains []string      `yaml:"unsigned_domains"`
	SignatureTTL    time.Duration `yaml:"signature_ttl"`
	Retry           struct {
		Base   time.Duration `yaml:"base"`
		Max    time.Duration `yaml:"max"`
		MaxAge time.Duration `yaml:"max_age"`
	} `yaml:"retry"`
	Limits   map[string]limitsConfig `yaml:"limits"` // fixed, by recipient domain, MX group or "*"
	Adaptive struct {
		Start    limitsConfig `yaml:"start"`
		Floor    limitsConfig `yaml:"floor"`
		Ceiling  limitsConfig `yaml:"ceiling"`
		Increase float64      `yaml:"increase"` // messages per second gained per second without throttling
		Decrease float64      `yaml:"decrease"` // factor on a throttling signal, between 0 and 1
	} `yaml:"adaptive"` // direct delivery's MX groups
	WarmUp *warmUpConfig `yaml:"warmup"`
}

type limitsConfig struct {
	Concurrency int     `yaml:"concurrency"`
	PerSecond   float64 `yaml:"per_second"`
}

func (l limitsConfig) limits() mailing.Limits {
	return mailing.Limits{Concurrency: l.Concurrency, PerSecond: l.PerSecond}
}

// warmUpConfig is a warm-up plan: daily caps per provider group.
type warmUpConfig struct {
	Start    string `yaml:"start"`    // YYYY-MM-DD, the plan's first day
	Timezone string `yaml:"timezone"` // where days begin; default UTC
	Groups   map[string]struct {
		Daily  []int64 `yaml:"daily"`
		First  int64   `yaml:"first"`
		Growth float64 `yaml:"growth"`
		Max    int64   `yaml:"max"`
	} `yaml:"groups"`

	plan mailing.WarmUp // parsed by check
}

// check parses and validates the plan.
func (w *warmUpConfig) check() error {
	loc := time.UTC
	if w.Timezone != "" {
		var err error
		if loc, err = time.LoadLocation(w.Timezone); err != nil {
			return fmt.Errorf("delivery.warmup.timezone: %w", err)
		}
	}
	start, err := time.ParseInLocation(time.DateOnly, w.Start, loc)
	if err != nil {
		return fmt.Errorf("delivery.warmup.start %q must be a date (YYYY-MM-DD)", w.Start)
	}
	w.plan = mailing.WarmUp{Start: start, Location: loc, Groups: map[string]mailing.WarmUpGroup{}}
	for name, g := range w.Groups {
		if len(g.Daily) == 0 && g.First <= 0 || g.Growth < 0 || g.Max < 0 || slices.ContainsFunc(g.Daily, func(n int64) bool { return n < 0 }) {
			return fmt.Errorf("delivery.warmup.groups.%s needs daily caps (≥ 0) or first > 0, growth ≥ 0 and max ≥ 0", name)
		}
		w.plan.Groups[name] = mailing.WarmUpGroup{Daily: g.Daily, First: g.First, Growth: g.Growth, Max: g.Max}
	}
	return nil
}

// checkAdaptive validates delivery.adaptive (zero: the default).
func (d deliveryConfig) checkAdaptive() error {
	a := d.Adaptive
	for _, l := range []struct {
		name string
		l    limitsConfig
	}{{"start", a.Start}, {"floor", a.Floor}, {"ceiling", a.Ceiling}} {
		if l.l.Concurrency < 0 || l.l.PerSecond < 0 {
			return fmt.Errorf("delivery.adaptive.%s must not be negative", l.name)
		}
	}
	if a.Increase < 0 || a.Decrease < 0 || a.Decrease >= 1 {
		return errors.New("delivery.adaptive needs increase ≥ 0 and decrease between 0 and 1")
	}
	if d.Smarthost.Connections < 0 || d.Smarthost.MessagesPerConn < 0 || d.Smarthost.PerSecond < 0 {
		return errors.New("delivery.smarthost.{connections,messages_per_connection,per_second} must not be negative")
	}
	return nil
}

var unknownKey = regexp.MustCompile(`line (\d+): field (\S+) not found in type \S+`)

func loadConfig(path string) (fileConfig, error) {
	var c fileConfig
	f, err := os.Open(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		msg := err.Error()
		if m := unknownKey.FindStringSubmatch(msg); m != nil {
			return c, fmt.Errorf("config %s: line %s: unknown key %q", path, m[1], m[2])
		}
		return c, fmt.Errorf("config %s: %s", path, strings.Join(strings.Fields(strings.TrimPrefix(msg, "yaml: ")), " "))
	}
	switch c.Delivery.Mode {
	case "", "off", "smarthost", "direct":
	default:
		return c, fmt.Errorf("config %s: delivery.mode %q must be smarthost, direct or off", path, c.Delivery.Mode)
	}
	for d, l := range c.Delivery.Limits {
		if l.Concurrency < 1 || l.PerSecond <= 0 {
			return c, fmt.Errorf("config %s: delivery.limits.%s needs concurrency ≥ 1 and per_second > 0", path, d)
		}
	}
	if err := c.Delivery.checkAdaptive(); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if w := c.Delivery.WarmUp; w != nil {
		if err := w.check(); err != nil {
			return c, fmt.Errorf("config %s: %w", path, err)
		}
	}
	return c, nil
}

// apply copies the file's delivery settings into an engine configuration.
func (d deliveryConfig) apply(cfg *mailing.EngineConfig) {
	if d.Batch > 0 {
		cfg.Batch = d.Batch
	}
	cfg.MaxRecipientsPerTransaction = d.MaxRcptPerTx
	cfg.Lease, cfg.SignatureTTL = d.Lease, d.SignatureTTL
	cfg.RetryBase, cfg.RetryMax, cfg.MaxAge = d.Retry.Base, d.Retry.Max, d.Retry.MaxAge
	cfg.UnsignedDomains = append(cfg.UnsignedDomains, d.UnsignedDomains...)
	if len(d.Limits) > 0 {
		cfg.Limits = map[string]mailing.Limits{}
		for dom, l := range d.Limits {
			cfg.Limits[dom] = l.limits()
		}
	}
	cfg.Smarthost = mailing.SmarthostLimits{Connections: d.Smarthost.Connections, PerSecond: d.Smarthost.PerSecond}
	if sh, ok := cfg.Transport.(*mailing.Smarthost); ok && d.Smarthost.MessagesPerConn > 0 {
		sh.MessagesPerConn = d.Smarthost.MessagesPerConn
	}
	a := d.Adaptive
	cfg.Adaptive = mailing.Adaptive{Start: a.Start.limits(), Floor: a.Floor.limits(), Ceiling: a.Ceiling.limits(), Increase: a.Increase, Decrease: a.Decrease}
	if d.WarmUp != nil {
		plan := d.WarmUp.plan
		cfg.WarmUp = &plan
	}
}

// relay turns the file's relay limits into the relay's (zero: default).
func (l relayLimits) relay() relay.Limits {
	return relay.Limits{MaxMessageSize: l.MaxMessageSize, MaxRecipients: l.MaxRecipients, MaxLineLength: l.MaxLineLength,
		MaxHeaderBytes: l.MaxHeaderBytes, MaxHeaders: l.MaxHeaders, ReadTimeout: l.ReadTimeout, WriteTimeout: l.WriteTimeout,
		SessionTimeout: l.SessionTimeout, MaxConns: l.MaxConns, MaxConnsPerIP: l.MaxConnsPerIP, AuthDelay: l.AuthDelay,
		AuthFailures: l.AuthFailures, AuthWindow: l.AuthWindow, AuthCache: l.AuthCache, DataMemory: l.DataMemory}
}
