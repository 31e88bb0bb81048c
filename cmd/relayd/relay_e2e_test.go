package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/servir-pe/envios/internal/dkimkey"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/tlscert"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
)

// server is a running `relayd serve` and what it logged.
type server struct {
	cmd         *exec.Cmd
	smtp, smtps string // the bound addresses, read from the log
	https       string
	mx          string // with --mx
	mu          sync.Mutex
	logs        bytes.Buffer
}

func (s *server) logged() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

var listening = regexp.MustCompile(`msg=listening proto=(smtps?|https|mx) addr=(\S+)`)

// startServe starts relayd serve and waits for its two listening lines and
// its ready line.
func startServe(t *testing.T, dir string, env []string, args ...string) *server {
	t.Helper()
	s := &server{cmd: exec.Command(binary(t), append([]string{"serve"}, args...)...)}
	s.cmd.Dir, s.cmd.Env = dir, append(os.Environ(), env...)
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.cmd.Process.Kill(); _ = s.cmd.Wait() })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.logs.WriteString(line + "\n")
			if m := listening.FindStringSubmatch(line); m != nil {
				switch m[1] {
				case "smtp":
					s.smtp = m[2]
				case "smtps":
					s.smtps = m[2]
				case "https":
					s.https = m[2]
				case "mx":
					s.mx = m[2]
				}
			}
			s.mu.Unlock()
			if strings.Contains(line, `msg="relayd ready"`) {
				once.Do(func() { close(ready) })
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatalf("relayd serve never said ready; it logged:\n%s", s.logged())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.smtp == "" || s.smtps == "" || s.https == "" {
		t.Fatalf("no listening lines; logged:\n%s", s.logs.String())
	}
	return s
}

func (s *server) stop(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Wait(); err != nil {
		t.Fatalf("serve: %v\n%s", err, s.logged())
	}
}

// addCredential runs `relayd credential add --json` and returns the
// username and password it printed.
func addCredential(t *testing.T, dir string, env []string, account string) (string, string) {
	t.Helper()
	out, code := relayd(t, dir, env, "credential", "add", account, "--name", "legacy app", "--json")
	if code != 0 {
		t.Fatalf("credential add: exit %d\n%s", code, out)
	}
	var c struct{ Username, Password string }
	if err := json.Unmarshal([]byte(out), &c); err != nil || c.Username == "" || len(c.Password) < 20 {
		t.Fatalf("credential add printed %q (%v)", out, err)
	}
	return c.Username, c.Password
}

func relayTLS(t *testing.T, dir string) (*tls.Config, string) {
	t.Helper()
	certFile := filepath.Join(dir, "relayd-cert.pem") // self-signed beside the SQLite file
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatalf("self-signed certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}, certFile
}

// requireClient finds a client program; CI (ENVIOS_TEST_CLIENTS=required)
// fails when it is missing, elsewhere the case is skipped.
func requireClient(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("ENVIOS_TEST_CLIENTS") == "required" {
			t.Fatalf("%s is required (ENVIOS_TEST_CLIENTS=required) but not installed", name)
		}
		t.Skipf("%s not installed (.ci/run installs it)", name)
	}
	return p
}

const legacyMessage = "From: Avisos SERVIR <avisos@servir.gob.pe>\r\nTo: %s\r\nBcc: oculto@example.net\r\n" +
	"Subject: Aviso de %s\r\nX-Envios-Campaign: legacy\r\n\r\nHola, esto es una prueba de %s.\r\n"

// The "done when": a legacy app configured with host, port,
// username and password sends through relayd — with Go's net/smtp over
// STARTTLS and over implicit TLS, swaks, Python's smtplib and openssl
// s_client — the mail reaches a loopback sink DKIM-signed, the account's
// pool goes down by the number of recipients, and every recipient row has
// its times.
func TestRelayLegacyClientsEndToEnd(t *testing.T) {
	dir, env, m := setUpAdmin(t, 1000, "rsa2048")
	user, pass := addCredential(t, dir, env, "sjti/talento")
	sink := mailtest.NewSink(t)
	ca := filepath.Join(dir, "sink.pem")
	if err := os.WriteFile(ca, sink.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServe(t, dir, env, "--smarthost", sink.Addr, "--smarthost-ca", ca, "--sending-domain", "envios.servir.gob.pe")
	if !strings.Contains(s.logged(), "generated a self-signed TLS certificate") {
		t.Errorf("no log line about the generated certificate:\n%s", s.logged())
	}
	clientTLS, certFile := relayTLS(t, dir)
	host, port, _ := net.SplitHostPort(s.smtp)
	_, tlsPort, _ := net.SplitHostPort(s.smtps)

	sent := map[string]int{} // client → recipients it sent to
	// net/smtp, STARTTLS on the submission port.
	t.Run("net/smtp STARTTLS", func(t *testing.T) {
		c, err := smtp.Dial(s.smtp)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.StartTLS(clientTLS); err != nil {
			t.Fatal(err)
		}
		if err := c.Auth(smtp.PlainAuth("", user, pass, "127.0.0.1")); err != nil {
			t.Fatal(err)
		}
		sendWith(t, c, "gosmtp@example.org", "net/smtp")
		sent["net/smtp"] = 2
	})
	t.Run("net/smtp implicit TLS", func(t *testing.T) {
		conn, err := tls.Dial("tcp", s.smtps, clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		c, err := smtp.NewClient(conn, "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(smtp.PlainAuth("", user, pass, "127.0.0.1")); err != nil {
			t.Fatal(err)
		}
		sendWith(t, c, "implicit@example.org", "TLS implícito")
		sent["implicit"] = 2
	})
	t.Run("examples/legacy-smtp", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "legacy-smtp")
		if out, err := exec.Command("go", "build", "-o", bin, "../../examples/legacy-smtp").CombinedOutput(); err != nil {
			t.Fatalf("build: %v\n%s", err, out)
		}
		out, err := exec.Command(bin, "--host", "127.0.0.1", "--port", port, "--user", user, "--password", pass, "--ca", certFile,
			"--from", "avisos@servir.gob.pe", "--to", "legacy@example.org", "--campaign", "legacy").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "accepted: 1 recipient(s)") {
			t.Fatalf("legacy-smtp: %v\n%s", err, out)
		}
		sent["example"] = 1
	})
	t.Run("swaks", func(t *testing.T) {
		swaks := requireClient(t, "swaks")
		out, err := exec.Command(swaks, "--server", host, "--port", port, "--tls", "--auth", "LOGIN",
			"--auth-user", user, "--auth-password", pass, "--pipeline", "--from", "avisos@servir.gob.pe",
			"--to", "swaks@example.org", "--data", fmt.Sprintf(strings.ReplaceAll(legacyMessage, "\r\n", "\n"), "swaks@example.org", "swaks", "swaks"),
		).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "250 2.0.0 Ok: queued as") {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
		sent["swaks"] = 1
	})
	t.Run("python smtplib", func(t *testing.T) {
		python := requireClient(t, "python3")
		script := `import smtplib, ssl, sys
host, port, tport, user, pw, cafile, msg = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
with smtplib.SMTP(host, int(port)) as s:
    s.starttls(context=ctx)
    s.login(user, pw)
    s.sendmail("avisos@servir.gob.pe", ["python@example.org", "oculto@example.net"], msg.replace("\\n", "\r\n"))
with smtplib.SMTP_SSL(host, int(tport), context=ctx) as s:
    try:
        s.login(user, "wrong-password")
        sys.exit("a wrong password was accepted")
    except smtplib.SMTPAuthenticationError as e:
        print("refused", e.smtp_code, e.smtp_error.decode())
print("ok")
`
		msg := strings.ReplaceAll(fmt.Sprintf(legacyMessage, "python@example.org", "smtplib", "smtplib"), "\r\n", "\n")
		out, err := exec.Command(python, "-c", script, host, port, tlsPort, user, pass, certFile, msg).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "refused 535 5.7.8") || !strings.Contains(string(out), "ok") {
			t.Fatalf("smtplib: %v\n%s", err, out)
		}
		sent["python"] = 2
	})
	t.Run("openssl s_client", func(t *testing.T) {
		openssl := requireClient(t, "openssl")
		auth := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
		body := fmt.Sprintf(legacyMessage, "openssl@example.org", "openssl", "openssl")
		// Pipelined after the handshake, as a terminal user would paste it.
		script := "EHLO openssl.test\r\nAUTH PLAIN " + auth + "\r\nMAIL FROM:<avisos@servir.gob.pe>\r\nRCPT TO:<openssl@example.org>\r\nDATA\r\n" +
			body + ".\r\nQUIT\r\n"
		cmd := exec.Command(openssl, "s_client", "-starttls", "smtp", "-connect", s.smtp, "-CAfile", certFile, "-quiet", "-verify_return_error")
		cmd.Stdin = strings.NewReader(script)
		done := make(chan struct{})
		var out []byte
		var err error
		go func() { out, err = cmd.CombinedOutput(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatal("openssl s_client did not finish")
		}
		if !strings.Contains(string(out), "235 2.0.0") || !strings.Contains(string(out), "250 2.0.0 Ok: queued as") || !strings.Contains(string(out), "221 ") {
			t.Fatalf("openssl s_client: %v\n%s", err, out)
		}
		sent["openssl"] = 1
	})

	// Every recipient of every accepted message reaches the sink, signed.
	want := 0
	for _, n := range sent {
		want += n
	}
	deadline := time.Now().Add(30 * time.Second)
	got := func() int {
		n := 0
		for _, msg := range sink.Messages() {
			n += len(msg.To)
		}
		return n
	}
	for got() < want && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	s.stop(t)
	if got() != want {
		t.Fatalf("sink got %d recipients, want %d\nrelayd logged:\n%s", got(), want, s.logged())
	}
	records := dkimRecords(t, filepath.Join(dir, "relayd.db"))
	for _, msg := range sink.Messages() {
		if bytes.Contains(msg.Data, []byte("\r\nBcc:")) || bytes.Contains(msg.Data, []byte("X-Envios-")) {
			t.Errorf("delivered message carries Bcc or a directive:\n%s", msg.Data)
		}
		if !bytes.Contains(msg.Data, []byte("\r\nMessage-ID: <")) || !bytes.Contains(msg.Data, []byte("\r\nDate: ")) {
			t.Errorf("delivered message lacks Message-ID or Date:\n%s", msg.Data)
		}
		vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg.Data), &dkim.VerifyOptions{LookupTXT: records.lookup})
		if err != nil || len(vs) == 0 || vs[0].Err != nil || vs[0].Domain != "servir.gob.pe" {
			t.Errorf("DKIM does not verify: %v %+v\n%s", err, vs, msg.Data)
		}
		if !strings.HasPrefix(msg.From, "b+") || !strings.HasSuffix(msg.From, "@envios.servir.gob.pe") {
			t.Errorf("return path %q is not on the sending domain", msg.From)
		}
	}
	// The pool went down by the recipients; each has its row and times.
	ctx := context.Background()
	acct, err := m.Ledger().Account(ctx, "sjti/talento")
	if err != nil || acct.Used != int64(want) {
		t.Fatalf("used %d, want %d (%v)", acct.Used, want, err)
	}
	infos, err := m.Messages(ctx, mailing.MessageFilter{Account: "sjti/talento", Campaign: "legacy"})
	if err != nil || len(infos) != len(sent) {
		t.Fatalf("%d messages in campaign legacy, want %d (%v)", len(infos), len(sent), err)
	}
	for _, info := range infos {
		rs, err := m.Recipients(ctx, "", info.ID, -1, 0)
		if err != nil || len(rs) != info.Recipients || len(rs) == 0 {
			t.Fatalf("recipients of %s: %d %v", info.ID, len(rs), err)
		}
		for _, r := range rs {
			if r.Status != mailing.StatusSent || r.AcceptedAt.IsZero() || r.LastAttemptAt.IsZero() || r.FinalAt.IsZero() ||
				r.RemoteHost == "" || !strings.HasPrefix(r.Reply, "250") {
				t.Errorf("recipient row %+v", r)
			}
		}
		if info.Origin != "smtp" {
			t.Errorf("origin %q, want smtp", info.Origin)
		}
	}
}

func sendWith(t *testing.T, c *smtp.Client, to, what string) {
	t.Helper()
	if err := c.Mail("avisos@servir.gob.pe"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{to, "oculto@example.net"} {
		if err := c.Rcpt(r); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, legacyMessage, to, what, what)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}

type txtRecords map[string]string

func (r txtRecords) lookup(name string) ([]string, error) {
	if v, ok := r[name]; ok {
		return []string{v}, nil
	}
	return nil, fmt.Errorf("no TXT record %s", name)
}

func dkimRecords(t *testing.T, dsn string) txtRecords {
	t.Helper()
	db, err := store.Open(context.Background(), store.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keys, err := dkimkey.List(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	recs := txtRecords{}
	for _, k := range keys {
		name, value := k.Record()
		recs[strings.TrimSuffix(name, ".")] = value
	}
	return recs
}

// kill -9 of relayd right after a 250: the message was committed, so a
// restarted relayd delivers it.
func TestRelayKilledAfterAcceptDelivers(t *testing.T) {
	dir, env, m := setUpAdmin(t, 1000, "ed25519")
	user, pass := addCredential(t, dir, env, "sjti/talento")
	s := startServe(t, dir, env) // no delivery: the message stays queued
	clientTLS, _ := relayTLS(t, dir)
	c, err := smtp.Dial(s.smtp)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartTLS(clientTLS); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(smtp.PlainAuth("", user, pass, "127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("avisos@servir.gob.pe"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("kill@example.org"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "From: avisos@servir.gob.pe\r\nTo: kill@example.org\r\nSubject: kill\r\n\r\nantes del kill\r\n")
	if err := w.Close(); err != nil { // the 250
		t.Fatal(err)
	}
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = s.cmd.Wait()
	c.Close()

	sink := mailtest.NewSink(t)
	ca := filepath.Join(dir, "sink.pem")
	if err := os.WriteFile(ca, sink.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	s = startServe(t, dir, env, "--smarthost", sink.Addr, "--smarthost-ca", ca, "--sending-domain", "envios.servir.gob.pe")
	deadline := time.Now().Add(30 * time.Second)
	for len(sink.Messages()) < 1 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	s.stop(t)
	msgs := sink.Messages()
	if len(msgs) != 1 || !bytes.Contains(msgs[0].Data, []byte("antes del kill")) {
		t.Fatalf("sink got %d messages after the restart\n%s", len(msgs), s.logged())
	}
	acct, err := m.Ledger().Account(context.Background(), "sjti/talento")
	if err != nil || acct.Used != 1 {
		t.Fatalf("used %d, want 1 (%v)", acct.Used, err)
	}
}

// --tls-cert/--tls-key are served, and SIGHUP reloads them: a renewed
// certificate is presented to the next connection without a restart.
func TestRelayReloadsCertificateOnSIGHUP(t *testing.T) {
	dir, env, _ := setUpAdmin(t, 10, "ed25519")
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	write := func() []byte {
		c, k, err := tlscert.Generate("relay.servir.test", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cert, c, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(key, k, 0o600); err != nil {
			t.Fatal(err)
		}
		return c
	}
	served := func(s *server) []byte {
		conn, err := tls.Dial("tcp", s.smtps, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only reading the certificate
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Raw
	}
	first := write()
	s := startServe(t, dir, env, "--tls-cert", cert, "--tls-key", key)
	if got := served(s); !bytes.Equal(got, pemDER(t, first)) {
		t.Fatal("relayd does not serve --tls-cert")
	}
	second := write()
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.logged(), "certificate reloaded") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := served(s); !bytes.Equal(got, pemDER(t, second)) {
		t.Fatalf("after SIGHUP relayd still serves the old certificate\n%s", s.logged())
	}
	s.stop(t)
}

func pemDER(t *testing.T, p []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(p)
	if b == nil {
		t.Fatal("no PEM block")
	}
	return b.Bytes
}

// The HTTPS API of the real binary, driven with curl: a token prints once,
// a message posted is committed (202) and charged, another account's token
// and a bad token see nothing.
func TestAPIEndToEndWithCurl(t *testing.T) {
	curl := requireClient(t, "curl")
	dir, env, m := setUpAdmin(t, 1000, "ed25519")
	if out, code := relayd(t, dir, env, "account", "add", "enap/eventos", "--allocation", "0"); code != 0 {
		t.Fatalf("account add: %s", out)
	}
	token := func(args ...string) string {
		out, code := relayd(t, dir, env, append([]string{"token", "add", "--json"}, args...)...)
		var tk struct{ Token string }
		if code != 0 || json.Unmarshal([]byte(out), &tk) != nil || !strings.HasPrefix(tk.Token, "envios_") {
			t.Fatalf("token add %v: %s", args, out)
		}
		return tk.Token
	}
	talento, eventos := token("sjti/talento"), token("enap/eventos")
	s := startServe(t, dir, env)
	_, certFile := relayTLS(t, dir)
	do := func(tok, method, path, body string) (int, map[string]any) {
		args := []string{"-sS", "--cacert", certFile, "-X", method, "-w", "\n%{http_code}", "-H", "Content-Type: application/json"}
		if tok != "" {
			args = append(args, "-H", "Authorization: Bearer "+tok)
		}
		if body != "" {
			args = append(args, "--data-binary", body)
		}
		out, err := exec.Command(curl, append(args, "https://"+s.https+path)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s %s: %v\n%s", method, path, err, out)
		}
		i := bytes.LastIndexByte(out, '\n')
		var code int
		fmt.Sscan(string(out[i+1:]), &code)
		var v map[string]any
		if err := json.Unmarshal(out[:i], &v); err != nil {
			t.Fatalf("curl %s %s: not JSON: %s", method, path, out)
		}
		return code, v
	}
	code, v := do(talento, "POST", "/v1/messages", `{"from":"avisos@servir.gob.pe","to":["ana@example.org"],"subject":"Hola","text":"desde curl","campaign":"api"}`)
	if code != 202 {
		t.Fatalf("POST: %d %v", code, v)
	}
	id := v["id"].(string)
	if code, v := do(talento, "GET", "/v1/messages/"+id, ""); code != 200 || v["campaign"] != "api" {
		t.Fatalf("GET: %d %v", code, v)
	}
	if code, _ := do(eventos, "GET", "/v1/messages/"+id, ""); code != 404 {
		t.Fatalf("another account's token: %d", code)
	}
	if code, _ := do("envios_forged", "GET", "/v1/messages/"+id, ""); code != 401 {
		t.Fatalf("a bad token: %d", code)
	}
	// Account B cannot cancel A's message, nor find it by address.
	if code, _ := do(eventos, "DELETE", "/v1/messages/"+id, ""); code != 404 {
		t.Fatalf("another account's cancel: %d", code)
	}
	if code, v := do(eventos, "GET", "/v1/recipients?address=ANA@example.org", ""); code != 200 || len(v["recipients"].([]any)) != 0 {
		t.Fatalf("another account's lookup: %d %v", code, v)
	}
	if code, v := do(talento, "GET", "/v1/recipients?address=ANA@example.org", ""); code != 200 || len(v["recipients"].([]any)) != 1 {
		t.Fatalf("own lookup: %d %v", code, v)
	}
	// Malformed JSON and a body over the limit.
	if code, v := do(talento, "POST", "/v1/messages", `{"from": [`); code != 400 || v["error"].(map[string]any)["code"] != "malformed_json" {
		t.Fatalf("malformed JSON: %d %v", code, v)
	}
	big := `{"from":"avisos@servir.gob.pe","to":["a@example.org"],"subject":"s","text":"` + strings.Repeat("x", 33<<20) + `"}`
	bigFile := filepath.Join(dir, "big.json")
	if err := os.WriteFile(bigFile, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	// relayd answers before reading the whole body and closes the
	// connection; curl may then see the close before the end of the answer
	// (exit 18 or 56), but the status line has arrived.
	bigOut, _ := exec.Command(curl, "-sS", "--cacert", certFile, "-H", "Authorization: Bearer "+talento, "-H", "Content-Type: application/json",
		"--data-binary", "@"+bigFile, "-o", "/dev/null", "-w", "%{http_code}", "https://"+s.https+"/v1/messages").Output()
	if !strings.HasPrefix(string(bigOut), "413") {
		t.Fatalf("oversize body: %q", bigOut)
	}
	// An export with B's token holds none of A's rows; with A's, A's.
	export := func(tok string) string {
		out, err := exec.Command(curl, "-sS", "--cacert", certFile, "-H", "Authorization: Bearer "+tok, "https://"+s.https+"/v1/export?format=csv").CombinedOutput()
		if err != nil {
			t.Fatalf("export: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := export(eventos); strings.Contains(out, "ana@example.org") || !strings.HasPrefix(out, "id,account") {
		t.Fatalf("B's export: %s", out)
	}
	if out := export(talento); !strings.Contains(out, "ana@example.org") {
		t.Fatalf("A's export: %s", out)
	}
	if a, err := m.Ledger().Account(context.Background(), "sjti/talento"); err != nil || a.Used != 1 {
		t.Fatalf("used %d (%v), want 1", a.Used, err)
	}
	// Metrics for an admin token, with what the process adds.
	admin := token("--admin")
	out, err := exec.Command(curl, "-sS", "--cacert", certFile, "-H", "Authorization: Bearer "+admin, "https://"+s.https+"/metrics").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `envios_recipients_total{account="sjti/talento",origin="http",kind="accepted"} 1`) ||
		!strings.Contains(string(out), "envios_smtp_sessions ") {
		t.Fatalf("metrics: %v\n%s", err, out)
	}
	// Plain HTTP is not served on the TLS port.
	if out, err := exec.Command(curl, "-sS", "http://"+s.https+"/healthz").CombinedOutput(); err == nil && strings.Contains(string(out), `"ok"`) {
		t.Fatalf("the API answered plain HTTP: %s", out)
	}
	s.stop(t)
}
