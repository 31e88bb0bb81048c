package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
)

// campaignSite is a data directory set up with the real relayd the way
// an admin does it for campaigns — pool, sender identity, DKIM key, a list
// of n contacts — on an engine.
type campaignSite struct {
	dir string
	env []string
	db  *bun.DB
	m   *mailing.Mailer
}

func setUpCampaigns(t *testing.T, engine store.Engine, contacts int) campaignSite {
	t.Helper()
	dir := t.TempDir()
	dsn := storetest.DSN(t, engine)
	env := []string{"RELAYD_DB=" + dsn, "RELAYD_SMTP=127.0.0.1:0", "RELAYD_SMTPS=127.0.0.1:0", "RELAYD_HTTPS=127.0.0.1:0"}
	pool := filepath.Join(dir, "pool.yaml")
	today := time.Now().UTC().Format("2006-01-02")
	if err := os.WriteFile(pool, []byte("pool:\n  name: e2e\n  total: 1000000\n  starts: "+today+"\n  days: 2\n  timezone: UTC\n"+
		"accounts:\n  - name: enap/eventos\n    origin: platform\n    allocation: 500000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var csv strings.Builder
	csv.WriteString("correo,nombre,region\n")
	for i := range contacts {
		fmt.Fprintf(&csv, "persona%d@example.com,Persona %d,Región %d\n", i, i, i%25)
	}
	file := filepath.Join(dir, "contactos.csv")
	if err := os.WriteFile(file, []byte(csv.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"db", "migrate"}, {"quota", "init", "--from", pool},
		{"sender", "add", "enap/eventos", "@servir.gob.pe"}, {"domain", "add", "servir.gob.pe", "--key", "ed25519"},
		{"list", "create", "boletin", "--account", "enap/eventos"}, {"contacts", "import", file, "--account", "enap/eventos", "--list", "boletin"}} {
		if out, code := relayd(t, dir, env, args...); code != 0 {
			t.Fatalf("relayd %v: exit %d\n%s", args, code, out)
		}
	}
	m, err := mailing.Open(context.Background(), dsn, mailing.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	db, err := store.Open(context.Background(), store.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return campaignSite{dir, env, db, m}
}

// createCampaign runs relayd campaign create and returns the id.
func (c campaignSite) createCampaign(t *testing.T) string {
	t.Helper()
	text := filepath.Join(c.dir, "cuerpo.txt")
	if err := os.WriteFile(text, []byte("Estimada/o {{.name}} de {{.region}}: le invitamos.\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := relayd(t, c.dir, c.env, "campaign", "create", "--account", "enap/eventos", "--name", "Invitación", "--from", "eventos@servir.gob.pe",
		"--subject", "Hola {{.name}}", "--text-file", text, "--lists", "boletin", "--json")
	if code != 0 {
		t.Fatalf("campaign create: %d\n%s", code, out)
	}
	var got struct{ ID int64 }
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.ID == 0 {
		t.Fatalf("campaign create printed %q: %v", out, err)
	}
	return fmt.Sprint(got.ID)
}

// stored counts the campaign's recipient rows, their distinct seqs and
// addresses.
func (c campaignSite) stored(t *testing.T, id string) (rows, seqs, addrs int) {
	t.Helper()
	err := c.db.NewRaw("SELECT count(*), count(DISTINCT r.seq), count(DISTINCT r.address) FROM mail_recipients r JOIN mail_messages m ON m.id = r.message_id "+
		"WHERE m.idempotency_key = ?", "campaign:"+id).Scan(context.Background(), &rows, &seqs, &addrs)
	if err != nil {
		t.Fatal(err)
	}
	return rows, seqs, addrs
}

func (c campaignSite) show(t *testing.T, id string) (status string, materialised bool) {
	t.Helper()
	out, code := relayd(t, c.dir, c.env, "campaign", "show", id, "--json")
	if code != 0 {
		t.Fatalf("campaign show: %d\n%s", code, out)
	}
	var p struct {
		Campaign struct {
			Status         string
			MaterialisedAt time.Time `json:"materialised_at"`
		}
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("campaign show printed %q: %v", out, err)
	}
	return p.Campaign.Status, !p.Campaign.MaterialisedAt.IsZero()
}

// A campaign of 100,000 contacts started, relayd killed with SIGKILL while
// it stores the recipients, and restarted: every contact has exactly one
// recipient row and one charge.
func TestCampaignSurvivesKillDuringMaterialisation(t *testing.T) {
	const n = 100_000
	for _, engine := range storetest.Engines {
		t.Run(string(engine), func(t *testing.T) {
			c := setUpCampaigns(t, engine, n)
			id := c.createCampaign(t)
			first := startServe(t, c.dir, c.env)
			if out, code := relayd(t, c.dir, c.env, "campaign", "start", id, "--no-wait"); code != 0 {
				t.Fatalf("campaign start: %d\n%s", code, out)
			}
			deadline := time.Now().Add(60 * time.Second)
			rows := 0
			for rows == 0 && time.Now().Before(deadline) {
				rows, _, _ = c.stored(t, id)
				time.Sleep(2 * time.Millisecond)
			}
			if err := first.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_ = first.cmd.Wait()
			atKill, _, _ := c.stored(t, id)
			if atKill == 0 || atKill >= n {
				t.Fatalf("the kill came with %d of %d recipients stored: not during materialisation", atKill, n)
			}
			t.Logf("killed with %d of %d recipients stored", atKill, n)
			second := startServe(t, c.dir, c.env)
			deadline = time.Now().Add(90 * time.Second)
			for time.Now().Before(deadline) {
				if _, done := c.show(t, id); done {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			second.stop(t)
			rows, seqs, addrs := c.stored(t, id)
			if rows != n || seqs != n || addrs != n {
				t.Fatalf("after the restart: %d rows, %d seqs, %d addresses; want %d each", rows, seqs, addrs, n)
			}
			a, err := c.m.Ledger().Account(context.Background(), "enap/eventos")
			if err != nil || a.Used != n {
				t.Fatalf("charged %d, want %d (%v)", a.Used, n, err)
			}
			if out, code := relayd(t, c.dir, c.env, "quota", "verify"); code != 0 {
				t.Fatalf("quota verify: %d\n%s", code, out)
			}
		})
	}
}

// A paused campaign stays paused across a restart of relayd (a test send
// goes through meanwhile); resumed, every recipient is delivered and the
// campaign finishes.
func TestCampaignPauseResumeAcrossRestart(t *testing.T) {
	const n = 30
	for _, engine := range storetest.Engines {
		t.Run(string(engine), func(t *testing.T) {
			c := setUpCampaigns(t, engine, n)
			sink := mailtest.NewSink(t)
			ca := filepath.Join(c.dir, "sink.pem")
			if err := os.WriteFile(ca, sink.CertPEM(), 0o600); err != nil {
				t.Fatal(err)
			}
			conf := filepath.Join(c.dir, "relayd.yaml")
			if err := os.WriteFile(conf, []byte("sending_domain: envios.servir.gob.pe\ndelivery:\n  mode: smarthost\n  smarthost:\n    addr: "+sink.Addr+
				"\n    ca_file: "+ca+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			id := c.createCampaign(t)
			for _, args := range [][]string{{"campaign", "start", id}, {"campaign", "pause", id}} {
				if out, code := relayd(t, c.dir, c.env, args...); code != 0 {
					t.Fatalf("relayd %v: %d\n%s", args, code, out)
				}
			}
			wait := func(what string, ok func() bool) {
				t.Helper()
				deadline := time.Now().Add(60 * time.Second)
				for !ok() {
					if time.Now().After(deadline) {
						t.Fatalf("waited 60 s for %s", what)
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			s := startServe(t, c.dir, c.env, "--config", conf)
			if out, code := relayd(t, c.dir, c.env, "campaign", "test", id, "--to", "revisora@example.org", "--as", "persona2@example.com"); code != 0 {
				t.Fatalf("campaign test: %d\n%s", code, out)
			}
			wait("the test send", func() bool { return len(sink.Messages()) == 1 })
			if msg := sink.Messages()[0]; msg.To[0] != "revisora@example.org" || !strings.Contains(string(msg.Data), "Subject: Hola Persona 2") {
				t.Fatalf("test message to %v:\n%s", msg.To, msg.Data)
			}
			s.stop(t)
			s = startServe(t, c.dir, c.env, "--config", conf)
			time.Sleep(3 * time.Second) // long enough for the engine to claim what it may
			if got := len(sink.Messages()); got != 1 {
				t.Fatalf("%d messages delivered while the campaign was paused across a restart, want only the test", got)
			}
			if st, _ := c.show(t, id); st != "paused" {
				t.Fatalf("after the restart the campaign is %s", st)
			}
			if out, code := relayd(t, c.dir, c.env, "campaign", "resume", id); code != 0 {
				t.Fatalf("campaign resume: %d\n%s", code, out)
			}
			wait("every recipient", func() bool { return len(sink.Messages()) == n+1 })
			wait("the campaign to finish", func() bool { st, _ := c.show(t, id); return st == "finished" })
			s.stop(t)
			seen := map[string]bool{}
			for _, m := range sink.Messages() {
				seen[m.To[0]] = true
			}
			if len(seen) != n+1 {
				t.Fatalf("%d distinct recipients delivered, want %d", len(seen), n+1)
			}
		})
	}
}
