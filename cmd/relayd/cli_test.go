package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing/mailtest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// transcript is an admin session, run on each engine and compared with
// testdata/cli.golden. Every failing step must leave the database as it was.
var transcript = []string{
	`--help`,
	`quota show`,
	`db status`,
	`db migrate`,
	`db migrate`,
	`quota show`,
	`account list`,
	`quota init`,
	`quota init --from testdata/missing.yaml`,
	`quota init --from testdata/pool-unknown-key.yaml`,
	`quota init --from testdata/pool-overallocated.yaml`,
	`quota init --from ../../examples/servir/pool.yaml`,
	`quota init --from ../../examples/servir/pool.yaml`,
	`quota init --from testdata/pool-conflict.yaml`,
	`quota show`,
	`quota show --json`,
	`account add enap/nuevo --allocation 10`,
	`account add enap/nuevo --origin robot`,
	`account add Nuevo`,
	`account add enap/nuevo --description "New programme"`,
	`account add enap/nuevo`,
	`quota transfer enap/eventos enap/nuevo 1,000 --reason "new programme"`,
	`quota transfer enap/eventos enap/nuevo 5000000 --reason "too much"`,
	`quota transfer enap/eventos enap/nuevo 0 --reason zero`,
	`quota transfer enap/eventos enap/nuevo -5 --reason negative`,
	`quota transfer enap/eventos enap/nuevo abc --reason words`,
	`quota transfer enap/eventos enap/nuevo 1.5 --reason fraction`,
	`quota transfer enap/eventos enap/nuevo 10`,
	`quota transfer enap/eventos enap/nadie 10 --reason unknown`,
	`quota transfer enap/eventos enap/eventos 10 --reason self`,
	`quota transfer enap/eventos enap/nuevo`,
	`quota allocate enap/nuevo 1`,
	`quota allocate enap/nadie 1`,
	`account disable enap/nuevo`,
	`account disable enap/nuevo`,
	`account disable enap/nadie`,
	`account list`,
	`account enable enap/nuevo`,
	`account list --json`,
	`quota history enap/nuevo`,
	`quota history --kind transfer --json`,
	`quota history --kind refund`,
	`quota history --from 2026-12-01`,
	`quota history --from yesterday`,
	`quota usage`,
	`quota usage --from 2026-12-01 --to 2026-11-01`,
	`sender list`,
	`sender add enap/eventos @servir.gob.pe`,
	`sender add enap/eventos @SERVIR.gob.pe`,
	`sender add sjti/talento avisos@servir.gob.pe`,
	`sender add sjti/talento "Talento <talento@servir.gob.pe>"`,
	`sender add sjti/talento not-an-address`,
	`sender add sjti/nadie avisos@servir.gob.pe`,
	`sender list`,
	`sender list sjti/talento --json`,
	`credential list`,
	`credential add sjti/nadie`,
	`credential add`,
	`credential revoke nadie.abc123`,
	`token list`,
	`token add`,
	`token add sjti/nadie`,
	`token revoke 99`,
	`token revoke abc`,
	`sender remove sjti/talento avisos@servir.gob.pe`,
	`sender remove sjti/talento avisos@servir.gob.pe`,
	`domain list`,
	`domain add not_a_domain`,
	`domain add servir.gob.pe --key dsa`,
	`domain dns`,
	`domain dns --sending-domain envios.servir.gob.pe --ip 203.0.113.7`,
	`quota verify`,
	`report totals`,
	`report totals --by week`,
	`report totals --account enap/nadie`,
	`report totals --from 2026-12-01 --to 2026-11-01`,
	`report verify`,
	`report log --after x`,
	`inbound list`,
	`inbound list --mailbox info`,
	`inbound list --kind rebote`,
	`inbound show abc`,
	`inbound show 7`,
	`report recipient "Ana <Ana@Example.com>"`,
	`report recipient ana@example.com --json`,
	`report recipient`,
	`report message msg-nope`,
	`report campaign semana`,
	`report export`,
	`report export --format xml`,
	`report export --format jsonl --account enap/eventos`,
	`report --help`,
	`quota show --pool other`,
	`quota show extra`,
	`quota show --bogus`,
	`quota show --timezone Mars/Olympus`,
	`quota show --timezone UTC`,
	`quota transfer --help`,
	`quota --help`,
	`quota`,
	`quota frobnicate`,
	`frobnicate`,
}

var testNow = time.Date(2026, 11, 26, 17, 0, 0, 0, time.UTC) // 12:00 in Lima

func TestCLITranscript(t *testing.T) {
	for _, e := range storetest.Engines {
		t.Run(string(e), func(t *testing.T) {
			dsn := storetest.DSN(t, e)
			var out bytes.Buffer
			for _, line := range transcript {
				before := dump(t, dsn)
				code, stdout, stderr := runLine(t, dsn, line)
				fmt.Fprintf(&out, "$ relayd %s\n%s%s", line, stdout, stderr)
				if code != 0 {
					fmt.Fprintf(&out, "[exit %d]\n", code)
					if after := dump(t, dsn); after != before {
						t.Errorf("failing command %q changed the database:\nbefore %s\nafter  %s", line, before, after)
					}
					if n := strings.Count(stderr, "\n"); n != 1 && line != "quota" {
						t.Errorf("%q: error should be one line, got %d: %q", line, n, stderr)
					}
				}
				out.WriteString("\n")
			}
			golden(t, "cli.golden", out.String(), e == store.SQLite)
		})
	}
}

func runLine(t *testing.T, dsn, line string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	env := &env{stdout: &o, stderr: &e, now: func() time.Time { return testNow }, actor: "cli:test",
		getenv: func(k string) string {
			if k == "RELAYD_DB" {
				return dsn
			}
			return ""
		}}
	code = run(context.Background(), env, splitArgs(t, line))
	return code, o.String(), e.String()
}

// splitArgs splits a command line on spaces, keeping "double quoted" and
// 'single quoted' words (inside single quotes a double quote is a
// character, and the other way round), as a shell does.
func splitArgs(t *testing.T, s string) []string {
	var args []string
	var cur strings.Builder
	var quote rune // the open quote, or 0
	have := false
	for _, r := range s {
		switch {
		case quote == 0 && (r == '"' || r == '\''):
			quote, have = r, true
		case r == quote:
			quote = 0
		case r == ' ' && quote == 0:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if quote != 0 {
		t.Fatalf("unterminated quote in %q", s)
	}
	if have {
		args = append(args, cur.String())
	}
	return args
}

// dump summarises everything the admin commands can change.
func dump(t *testing.T, dsn string) string {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var b strings.Builder
	for _, q := range []string{
		"SELECT count(*) FROM envios_migrations",
		"SELECT name || ':' || total || ':' || allocated FROM quota_pools ORDER BY id",
		"SELECT name || ':' || allocation || ':' || used || ':' || CASE WHEN disabled THEN 'off' ELSE 'on' END FROM quota_accounts ORDER BY id",
		"SELECT count(*) || ':' || COALESCE(sum(amount), 0) FROM quota_entries",
		"SELECT count(*) FROM audit_log",
		"SELECT count(*) FROM mail_senders",
		"SELECT count(*) FROM dkim_keys",
	} {
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			b.WriteString("[no table] ")
			continue
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			b.WriteString(s + " ")
		}
		rows.Close()
	}
	return b.String()
}

func golden(t *testing.T, name, got string, mayUpdate bool) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update && mayUpdate {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("%s differs at line %d:\n got: %q\nwant: %q\n(run go test -update if the change is intended)", path, i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("%s differs in length: got %d lines, want %d (run go test -update if the change is intended)", path, len(gl), len(wl))
	}
}

func TestGroup(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 7: "7", 999: "999", 1000: "1,000", 8306727: "8,306,727", -1234567: "-1,234,567"} {
		if got := group(n); got != want {
			t.Errorf("group(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestParseAmount(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  string
	}{
		{"1000", 1000, ""},
		{"1,000", 1000, ""},
		{"8_306_727", 8306727, ""},
		{"0", 0, "must be positive"},
		{"-5", 0, "must be positive"},
		{"", 0, "not a whole number"},
		{"1.5", 0, "not a whole number"},
		{"1e6", 0, "not a whole number"},
		{"99999999999999999999", 0, "not a whole number"},
	}
	for _, tt := range tests {
		n, err := parseAmount("amount", tt.in)
		if tt.err == "" && (err != nil || n != tt.want) {
			t.Errorf("parseAmount(%q) = %d, %v; want %d", tt.in, n, err, tt.want)
		}
		if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("parseAmount(%q) err = %v, want %q", tt.in, err, tt.err)
		}
	}
}

func FuzzParseAmount(f *testing.F) {
	for _, s := range []string{"1", "1,000", "-5", "abc", "1_0", ",", "9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseAmount("amount", s)
		if err == nil && n <= 0 {
			t.Fatalf("parseAmount(%q) accepted %d", s, n)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Fatalf("multi-line error %q", err)
		}
	})
}

// DKIM keys are random, so their commands are checked by shape, not golden.
func TestDomainCommands(t *testing.T) {
	dsn := storetest.DSN(t, store.SQLite)
	if code, _, stderr := runLine(t, dsn, "db migrate"); code != 0 {
		t.Fatal(stderr)
	}
	code, out, stderr := runLine(t, dsn, "domain add servir.gob.pe")
	if code != 0 || !regexp.MustCompile(`(?m)^e20261126\._domainkey\.servir\.gob\.pe\. IN TXT "v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]{200,255}" "[A-Za-z0-9+/=]+"$`).MatchString(out) {
		t.Fatalf("domain add: exit %d\n%s%s", code, out, stderr)
	}
	if strings.Contains(out, "PRIVATE") {
		t.Fatal("the private key was printed")
	}
	code, out, _ = runLine(t, dsn, "domain add servir.gob.pe --key ed25519 --selector ed1")
	if code != 0 || !regexp.MustCompile(`ed1\._domainkey\.servir\.gob\.pe\. IN TXT "v=DKIM1; k=ed25519; p=[A-Za-z0-9+/=]{44}"`).MatchString(out) {
		t.Fatalf("domain add ed25519: %d\n%s", code, out)
	}
	if code, _, stderr := runLine(t, dsn, "domain add servir.gob.pe --key ed25519 --selector ed1"); code != 1 || !strings.Contains(stderr, "already has selector ed1") {
		t.Fatalf("duplicate selector: %d %s", code, stderr)
	}
	code, out, _ = runLine(t, dsn, "domain rotate servir.gob.pe")
	if code != 0 || !strings.Contains(out, "e20261126-2._domainkey.servir.gob.pe") {
		t.Fatalf("rotate: %d\n%s", code, out)
	}
	if code, out, _ = runLine(t, dsn, "domain retire servir.gob.pe e20261126"); code != 0 || !strings.Contains(out, "retired") {
		t.Fatalf("retire: %d\n%s", code, out)
	}
	if code, _, stderr := runLine(t, dsn, "domain retire servir.gob.pe e20261126"); code != 1 || !strings.Contains(stderr, "no key in use") {
		t.Fatalf("retire twice: %d %s", code, stderr)
	}
	code, out, _ = runLine(t, dsn, "domain list")
	if code != 0 || strings.Count(out, "servir.gob.pe") != 4 || strings.Count(out, "retired") != 1 {
		t.Fatalf("list: %d\n%s", code, out)
	}
	code, out, _ = runLine(t, dsn, "domain dns --sending-domain envios.servir.gob.pe --ip 203.0.113.7")
	if code != 0 {
		t.Fatalf("dns: exit %d", code)
	}
	for _, want := range []string{`envios.servir.gob.pe. IN MX 10 envios.servir.gob.pe.`, `"v=spf1 ip4:203.0.113.7 -all"`,
		`_dmarc.envios.servir.gob.pe. IN TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc@envios.servir.gob.pe"`, "ed1._domainkey.servir.gob.pe"} {
		if !strings.Contains(out, want) {
			t.Fatalf("dns output lacks %q:\n%s", want, out)
		}
	}
}

// txtOf reads the name and value of the TXT record `domain add` printed.
func txtOf(t *testing.T, out string) (string, string) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^(\S+)\. IN TXT (.*)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no TXT record in:\n%s", out)
	}
	var v strings.Builder
	for _, part := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(m[2], -1) {
		v.WriteString(part[1])
	}
	return m[1] + ".", v.String()
}

func TestDomainCheck(t *testing.T) {
	dsn := storetest.DSN(t, store.SQLite)
	if code, _, stderr := runLine(t, dsn, "db migrate"); code != 0 {
		t.Fatal(stderr)
	}
	_, rsaOut, _ := runLine(t, dsn, "domain add servir.gob.pe")
	_, edOut, _ := runLine(t, dsn, "domain add servir.gob.pe --key ed25519 --selector ed1")
	rsaName, rsaValue := txtOf(t, rsaOut)
	edName, edValue := txtOf(t, edOut)
	zone := mailtest.Zone{
		TXT: map[string][]string{
			rsaName:                        {rsaValue},
			edName:                         {"v=DKIM1; k=ed25519; p=AAAAnotthekey"},
			"envios.servir.gob.pe.":        {"v=spf1 ip4:203.0.113.7 -all"},
			"_dmarc.envios.servir.gob.pe.": {"v=DMARC1; p=quarantine"},
		},
		MX: map[string][]mailtest.MX{"envios.servir.gob.pe.": {{Pref: 10, Host: "envios.servir.gob.pe."}}},
	}
	addr := mailtest.NewDNS(t, zone)
	code, out, stderr := runLine(t, dsn, "domain check servir.gob.pe --sending-domain envios.servir.gob.pe --dns-server "+addr)
	if code != 1 || !strings.Contains(out, "PROBLEM  DKIM ed1: ed1._domainkey.servir.gob.pe does not hold this key") ||
		!strings.Contains(out, "ok       DKIM e20261126 published") || !strings.Contains(out, "ok       DMARC for envios.servir.gob.pe") ||
		!strings.Contains(stderr, "1 DNS problem to fix") {
		t.Fatalf("exit %d\n%s%s", code, out, stderr)
	}
	zone.TXT[edName] = []string{edValue}
	delete(zone.TXT, "_dmarc.envios.servir.gob.pe.")
	addr = mailtest.NewDNS(t, zone)
	code, out, _ = runLine(t, dsn, "domain check servir.gob.pe --sending-domain envios.servir.gob.pe --dns-server "+addr)
	if code != 1 || !strings.Contains(out, "ok       DKIM ed1") || !strings.Contains(out, "PROBLEM  DMARC for envios.servir.gob.pe: none") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	zone.TXT["_dmarc.envios.servir.gob.pe."] = []string{"v=DMARC1; p=reject"}
	addr = mailtest.NewDNS(t, zone)
	if code, out, _ = runLine(t, dsn, "domain check servir.gob.pe --sending-domain envios.servir.gob.pe --dns-server "+addr); code != 0 {
		t.Fatalf("all published: exit %d\n%s", code, out)
	}
}
