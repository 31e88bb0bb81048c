package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
)

// relaydBinary builds the real relayd once per test run.
var relaydBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "relayd-e2e-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "relayd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", &buildError{out: string(out), err: err}
	}
	return bin, nil
})

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

func binary(t *testing.T) string {
	t.Helper()
	bin, err := relaydBinary()
	if err != nil {
		t.Fatalf("build relayd: %v", err)
	}
	return bin
}

func relayd(t *testing.T, dir string, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("relayd %v: %v", args, err)
	}
	return string(out), code
}

// The README's first command on a fresh directory: `relayd serve` creates
// data/relayd.db, migrates it, says it is ready, and stops cleanly on
// SIGTERM; the admin commands then work on the same file.
func TestServeOnEmbeddedDefault(t *testing.T) {
	dir := t.TempDir()
	examples, err := filepath.Abs("../../examples/servir/pool.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary(t), "serve")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "RELAYD_DB=", "RELAYD_DATA_DIR=", "RELAYD_SMTP=127.0.0.1:0", "RELAYD_SMTPS=127.0.0.1:0", "RELAYD_HTTPS=127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	ready := make(chan string, 1)
	var logged bytes.Buffer
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			logged.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.Contains(sc.Text(), `msg="relayd ready"`) {
				ready <- sc.Text()
			}
		}
	}()
	select {
	case line := <-ready:
		if !strings.Contains(line, "db=\"sqlite data/relayd.db\"") {
			t.Errorf("ready line = %q, want it to name data/relayd.db", line)
		}
	case <-time.After(30 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("relayd serve never said ready; it logged:\n%s", logged.String())
	}
	// While it runs, an admin loads the SERVIR pool into the same file.
	out, code := relayd(t, dir, []string{"RELAYD_DB="}, "quota", "init", "--from", examples)
	if code != 0 || !strings.Contains(out, "created pool servir-2026: 8,306,727 messages") {
		t.Fatalf("quota init beside serve: exit %d\n%s", code, out)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve exited with %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "relayd.db")); err != nil {
		t.Fatalf("embedded database: %v", err)
	}
	out, code = relayd(t, dir, []string{"RELAYD_DB="}, "quota", "show")
	if code != 0 || !strings.Contains(out, "TOTAL (10 accounts)                   8,306,727") {
		t.Fatalf("quota show: exit %d\n%s", code, out)
	}
}

// The real binary on both engines: load the pool twice, print it, and
// refuse bad input with exit codes, leaving the ledger verified.
func TestBinaryOnEachEngine(t *testing.T) {
	examples, _ := filepath.Abs("../../examples/servir/pool.yaml")
	for _, e := range storetest.Engines {
		t.Run(string(e), func(t *testing.T) {
			env := []string{"RELAYD_DB=" + storetest.DSN(t, e)}
			dir := t.TempDir()
			steps := []struct {
				args []string
				code int
				want string
			}{
				{[]string{"db", "migrate"}, 0, "applied 20261126000000_quota"},
				{[]string{"quota", "init", "--from", examples}, 0, "created pool servir-2026"},
				{[]string{"quota", "init", "--from", examples}, 0, "nothing changed"},
				{[]string{"quota", "show"}, 0, "TOTAL (10 accounts)                   8,306,727"},
				{[]string{"quota", "transfer", "sjti/talento", "gdcrsc/capacidades", "2000001", "--reason", "x"}, 1, "cannot transfer 2,000,001"},
				{[]string{"quota", "transfer", "sjti/talento", "gdcrsc/capacidades", "-1", "--reason", "x"}, 2, "must be positive"},
				{[]string{"quota", "verify"}, 0, "ledger verified"},
			}
			for _, s := range steps {
				out, code := relayd(t, dir, env, s.args...)
				if code != s.code || !strings.Contains(out, s.want) {
					t.Fatalf("relayd %s: exit %d, want %d with %q; output:\n%s", strings.Join(s.args, " "), code, s.code, s.want, out)
				}
			}
		})
	}
}

// Two nodes migrating one SQLite file at the same moment: the lock makes
// one apply and the other find nothing to do.
func TestConcurrentMigrateProcesses(t *testing.T) {
	dir := t.TempDir()
	env := []string{"RELAYD_DB=" + filepath.Join(dir, "shared.db")}
	var wg sync.WaitGroup
	outs := make([]string, 4)
	codes := make([]int, 4)
	for i := range outs {
		wg.Go(func() { outs[i], codes[i] = relayd(t, dir, env, "db", "migrate") })
	}
	wg.Wait()
	applied := 0
	for i := range outs {
		if codes[i] != 0 {
			t.Fatalf("migrate %d: exit %d\n%s", i, codes[i], outs[i])
		}
		if strings.Contains(outs[i], "applied") {
			applied++
		}
	}
	if applied != 1 {
		t.Fatalf("%d processes applied migrations, want exactly 1:\n%s", applied, strings.Join(outs, "\n"))
	}
}

// The real relayd delivers queued mail through a smarthost (a loopback
// sink with its own certificate), DKIM-signed, and records it as sent.
func TestServeDeliversThroughSmarthost(t *testing.T) {
	testServeDelivers(t, false)
}

// The same with --direct: the recipients' domain has an MX (on a loopback
// DNS server) pointing at the sink.
func TestServeDeliversDirectToMX(t *testing.T) {
	testServeDelivers(t, true)
}

func testServeDelivers(t *testing.T, direct bool) {
	dir, env, m := setUpAdmin(t, 100, "rsa2048")
	ctx := context.Background()
	r, err := m.Send(ctx, mailing.Message{Account: "sjti/talento", From: "avisos@servir.gob.pe",
		To: []string{"a@example.test", "b@example.test"}, Subject: "Prueba", Text: "Hola"})
	if err != nil {
		t.Fatal(err)
	}

	sink := mailtest.NewSink(t)
	ca := filepath.Join(dir, "sink.pem")
	if err := os.WriteFile(ca, sink.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"serve", "--smarthost", sink.Addr, "--smarthost-ca", ca, "--sending-domain", "envios.servir.gob.pe"}
	if direct {
		// This variant also keeps its DKIM key sealed with a key file.
		keyFile := filepath.Join(dir, "dkim.key")
		for _, args := range [][]string{{"domain", "keyfile", keyFile}, {"domain", "seal", "--dkim-key-file", keyFile}} {
			if out, code := relayd(t, dir, env, args...); code != 0 {
				t.Fatalf("relayd %v: exit %d\n%s", args, code, out)
			}
		}
		_, port, _ := net.SplitHostPort(sink.Addr)
		dnsAddr := mailtest.NewDNS(t, mailtest.Zone{
			MX: map[string][]mailtest.MX{"example.test.": {{Pref: 10, Host: "mx.sink.test."}}},
			A:  map[string]string{"mx.sink.test.": "127.0.0.1"}})
		// Direct delivery (and the key file) is configured by file, not flags.
		conf := filepath.Join(dir, "relayd.yaml")
		if err := os.WriteFile(conf, []byte("sending_domain: envios.servir.gob.pe\ndkim_key_file: "+keyFile+"\ndelivery:\n  mode: direct\n"+
			"  direct:\n    dns_server: "+dnsAddr+"\n    port: \""+port+"\"\n  smarthost:\n    ca_file: "+ca+"\n"+
			"  workers: 4\n  retry:\n    base: 30s\n    max_age: 48h\n  limits:\n    example.test:\n      concurrency: 2\n      per_second: 100\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = []string{"serve", "--config", conf}
	}
	cmd := exec.Command(binary(t), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	deadline := time.Now().Add(30 * time.Second)
	for len(sink.Messages()) < 1 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve: %v\n%s", err, logs.String())
	}
	// Both recipients are at one domain: one transaction carries them.
	msgs := sink.Messages()
	if len(msgs) != 1 || len(msgs[0].To) != 2 || !msgs[0].TLS || !bytes.HasPrefix(msgs[0].Data, []byte("DKIM-Signature: ")) {
		t.Fatalf("sink got %d messages, want one to both recipients (TLS, signed)\nrelayd logged:\n%s", len(msgs), logs.String())
	}
	info, err := m.Message(ctx, "", r.MessageID)
	if err != nil || info.Counts[mailing.StatusSent] != 2 {
		t.Fatalf("status %v %v", info.Counts, err)
	}
}

// DKIM private keys sealed with a key file: written once, mode 600; keys
// added with it are sealed, `domain seal` seals those in clear, none is left
// in clear in the database, and relayd refuses to serve sealed keys
// without the file, or a file others may read.
func TestDKIMKeysSealedWithAKeyFile(t *testing.T) {
	dir, env, _ := setUpAdmin(t, 10, "rsa2048")
	keyFile := filepath.Join(dir, "dkim.key")
	steps := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"domain", "keyfile", keyFile}, 0, "wrote a new DKIM key file"},
		{[]string{"domain", "keyfile", keyFile}, 1, "file exists"},
		{[]string{"domain", "add", "servir.gob.pe", "--key", "ed25519", "--selector", "ed", "--dkim-key-file", keyFile}, 0, "added ed25519 DKIM key ed"},
		{[]string{"domain", "list"}, 0, "ed         ed25519"},
		{[]string{"serve"}, 1, "DKIM key ed of servir.gob.pe is sealed: start with --dkim-key-file"},
		{[]string{"domain", "seal"}, 2, "--dkim-key-file (or RELAYD_DKIM_KEY_FILE) is required"},
		{[]string{"domain", "seal", "--dkim-key-file", keyFile}, 0, "sealed 1 value stored in clear"},
		{[]string{"domain", "seal", "--dkim-key-file", keyFile}, 0, "sealed 0 values stored in clear"},
	}
	var clear []string // the PEM bodies stored in clear before the seal
	for _, s := range steps {
		if len(s.args) > 1 && s.args[1] == "seal" && s.code == 0 && clear == nil {
			clear = clearKeys(t, filepath.Join(dir, "relayd.db"))
		}
		out, code := relayd(t, dir, env, s.args...)
		if code != s.code || !strings.Contains(out, s.want) {
			t.Fatalf("relayd %s: exit %d, want %d with %q; output:\n%s", strings.Join(s.args, " "), code, s.code, s.want, out)
		}
	}
	if len(clear) != 1 {
		t.Fatalf("%d keys in clear before the seal, want 1", len(clear))
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v %v", fi.Mode(), err)
	}
	out, _ := relayd(t, dir, env, "domain", "list")
	if strings.Count(out, "sealed") != 2 || strings.Contains(out, "clear") {
		t.Fatalf("after seal, domain list:\n%s", out)
	}
	// Not in the database file, nor in its write-ahead log.
	for _, name := range []string{"relayd.db", "relayd.db-wal"} {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte("PRIVATE KEY")) {
			t.Fatalf("a private key is still in clear in %s", name)
		}
		for _, body := range clear {
			for i := 0; i+48 <= len(body); i += 48 { // any line of it
				if bytes.Contains(raw, []byte(body[i:i+48])) {
					t.Fatalf("part of a key stored in clear before the seal is still in %s", name)
				}
			}
		}
	}
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := relayd(t, dir, env, "domain", "rotate", "servir.gob.pe", "--dkim-key-file", keyFile); code != 1 || !strings.Contains(out, "may be read by others") {
		t.Fatalf("rotate with a readable key file: exit %d\n%s", code, out)
	}
}

// clearKeys returns the base64 bodies of the PEM private keys stored in
// clear in a SQLite database, without their line breaks.
func clearKeys(t *testing.T, path string) []string {
	t.Helper()
	db, err := store.Open(context.Background(), store.Config{DSN: path})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var pems []string
	if err := db.NewRaw("SELECT private_key FROM dkim_keys WHERE private_key LIKE '-----BEGIN%'").Scan(context.Background(), &pems); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pems {
		var body strings.Builder
		for _, line := range strings.Split(p, "\n") {
			if !strings.HasPrefix(line, "-----") {
				body.WriteString(line)
			}
		}
		out = append(out, body.String())
	}
	return out
}

// kill -9 of relayd while deliveries are in flight loses nothing: after a
// restart (and the lease) every recipient is delivered and recorded sent.
func TestKilledServeLosesNothing(t *testing.T) {
	dir, env, m := setUpAdmin(t, 1000, "ed25519")
	ctx := context.Background()
	const n = 40
	var rs []mailing.Recipient
	for i := range n {
		rs = append(rs, mailing.Recipient{Address: fmt.Sprintf("p%d@example.com", i)})
	}
	b, err := m.SendBatch(ctx, mailing.Batch{Account: "sjti/talento", From: "avisos@servir.gob.pe", Subject: "s", Text: "t", Recipients: mailing.List(rs...)})
	if err != nil || b.Accepted != n {
		t.Fatalf("%+v %v", b, err)
	}
	sink := mailtest.NewSink(t)
	var slow atomic.Bool
	slow.Store(true)
	sink.Reply = func(string) error {
		if slow.Load() {
			time.Sleep(300 * time.Millisecond) // deliveries are in flight when the kill comes
		}
		return nil
	}
	ca := filepath.Join(dir, "sink.pem")
	if err := os.WriteFile(ca, sink.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "relayd.yaml")
	if err := os.WriteFile(conf, []byte("sending_domain: envios.servir.gob.pe\ndelivery:\n  mode: smarthost\n  smarthost:\n    addr: "+sink.Addr+
		"\n    ca_file: "+ca+"\n  lease: 2s\n  workers: 4\n  batch: 10\n  limits:\n    example.com: {concurrency: 4, per_second: 1000}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(binary(t), "serve", "--config", conf)
		cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	first := start()
	deadline := time.Now().Add(20 * time.Second)
	for len(sink.Messages()) < 5 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := first.Process.Kill(); err != nil { // SIGKILL: no drain, leases left behind
		t.Fatal(err)
	}
	_ = first.Wait()
	slow.Store(false)
	second := start()
	t.Cleanup(func() { _ = second.Process.Kill() })
	deadline = time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		info, err := m.Message(ctx, "", b.MessageID)
		if err == nil && info.Counts[mailing.StatusSent] == n {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = second.Process.Signal(syscall.SIGTERM)
	_ = second.Wait()
	info, err := m.Message(ctx, "", b.MessageID)
	if err != nil || info.Counts[mailing.StatusSent] != n {
		t.Fatalf("after kill -9 and restart: %v %v", info.Counts, err)
	}
	got := map[string]bool{}
	for _, msg := range sink.Messages() {
		got[msg.To[0]] = true
	}
	if len(got) != n {
		t.Fatalf("sink saw %d distinct recipients of %d", len(got), n)
	}
}

// setUpAdmin does with the real relayd what an admin does before mail can
// flow — migrate, load a pool valid today with sjti/talento, add its sender
// identity and a DKIM key — and opens a Mailer on the same SQLite file.
func setUpAdmin(t *testing.T, allocation int, key string) (dir string, env []string, m *mailing.Mailer) {
	t.Helper()
	dir = t.TempDir()
	dbPath := filepath.Join(dir, "relayd.db")
	env = []string{"RELAYD_DB=" + dbPath, "RELAYD_SMTP=127.0.0.1:0", "RELAYD_SMTPS=127.0.0.1:0", "RELAYD_HTTPS=127.0.0.1:0"}
	pool := filepath.Join(dir, "pool.yaml")
	today := time.Now().UTC().Format("2006-01-02")
	if err := os.WriteFile(pool, []byte(fmt.Sprintf("pool:\n  name: e2e\n  total: %d\n  starts: %s\n  days: 2\n  timezone: UTC\n"+
		"accounts:\n  - name: sjti/talento\n    origin: system\n    allocation: %d\n", allocation, today, allocation)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"db", "migrate"}, {"quota", "init", "--from", pool},
		{"sender", "add", "sjti/talento", "avisos@servir.gob.pe"}, {"domain", "add", "servir.gob.pe", "--key", key}} {
		if out, code := relayd(t, dir, env, args...); code != 0 {
			t.Fatalf("relayd %v: exit %d\n%s", args, code, out)
		}
	}
	m, err := mailing.Open(context.Background(), dbPath, mailing.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return dir, env, m
}
