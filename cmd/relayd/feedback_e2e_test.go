package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
)

const sendingDomain = "envios.servir.gob.pe"

// The deliverability loop with the real binary and real clients: relayd
// delivers to a loopback sink; a DSN sent with swaks to its MX bounces and
// suppresses the recipient, whose next message is suppressed, uncharged;
// curl POSTing the List-Unsubscribe URL of a delivered message
// unsubscribes it (GET changes nothing): its next bulk message is
// suppressed, a transactional one still delivered; the MX refuses an
// open-relay attempt and a forged token at RCPT.
func TestFeedbackLoopEndToEnd(t *testing.T) {
	swaks, curl := requireClient(t, "swaks"), requireClient(t, "curl")
	dir, env, m := setUpAdmin(t, 100, "ed25519")
	ctx := context.Background()
	sink := mailtest.NewSink(t)
	ca := filepath.Join(dir, "sink.pem")
	if err := os.WriteFile(ca, sink.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServe(t, dir, env, "--smarthost", sink.Addr, "--smarthost-ca", ca, "--sending-domain", sendingDomain, "--mx", "127.0.0.1:0")
	if srv.mx == "" {
		t.Fatalf("no mx listening line:\n%s", srv.logged())
	}
	send := func(to string, prio mailing.Priority) mailing.Receipt {
		t.Helper()
		r, err := m.Send(ctx, mailing.Message{Account: "sjti/talento", From: "avisos@servir.gob.pe", To: []string{to},
			Subject: "Boletín", Text: "Hola", HTML: "<p>Hola</p>", Campaign: "boletin", Priority: prio})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	delivered := func(n int) []mailtest.Message {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for len(sink.Messages()) < n && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		msgs := sink.Messages()
		if len(msgs) < n {
			t.Fatalf("sink has %d messages, want %d\n%s", len(msgs), n, srv.logged())
		}
		return msgs
	}
	status := func(r mailing.Receipt, want mailing.Status) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			rs, err := m.Recipients(ctx, "", r.MessageID, -1, 0)
			if err != nil {
				t.Fatal(err)
			}
			if rs[0].Status == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s is %s, want %s\n%s", rs[0].Address, rs[0].Status, want, srv.logged())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ana, luis := send("ana@example.test", mailing.Bulk), send("luis@example.test", mailing.Bulk)
	msgs := delivered(2)
	byTo := map[string]mailtest.Message{}
	for _, x := range msgs {
		byTo[x.To[0]] = x
	}
	anaFrom := byTo["ana@example.test"].From
	if !strings.HasPrefix(anaFrom, "b+") || !strings.HasSuffix(anaFrom, "@"+sendingDomain) {
		t.Fatalf("envelope sender %q", anaFrom)
	}

	// A DSN to ana's envelope sender, over the MX, with swaks.
	dsnFile := filepath.Join(dir, "dsn.eml")
	dsn := "From: MAILER-DAEMON@mx.example.test\nTo: " + anaFrom + "\nSubject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n--B\nContent-Type: text/plain\n\nNot delivered.\n\n" +
		"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.test\n\nFinal-Recipient: rfc822; ana@example.test\n" +
		"Action: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 <ana@example.test>: Recipient address rejected: User unknown\n\n--B--\n"
	if err := os.WriteFile(dsnFile, []byte(dsn), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(srv.mx)
	swak := func(from, to string, extra ...string) string {
		t.Helper()
		out, _ := exec.Command(swaks, append([]string{"--server", host, "--port", port, "--tls-optional", "--from", from, "--to", to,
			"--helo", "mx.example.test"}, extra...)...).CombinedOutput()
		return string(out)
	}
	if out := swak("<>", anaFrom, "--data", "@"+dsnFile); !strings.Contains(out, "~> MAIL FROM:<>") || !strings.Contains(out, "<~  250 2.0.0 OK: queued") {
		t.Fatalf("swaks DSN:\n%s", out)
	}
	status(ana, mailing.StatusBounced)
	if out, code := relayd(t, dir, env, "suppression", "check", "ana@example.test"); code != 0 || !strings.Contains(out, "would be stopped") {
		t.Fatalf("suppression check after the DSN: exit %d\n%s", code, out)
	}
	again := send("ana@example.test", mailing.Transactional)
	if len(again.Suppressed) != 1 {
		t.Fatalf("next send to a hard-bounced address: %+v", again)
	}
	if out, code := relayd(t, dir, env, "report", "recipient", "ana@example.test"); code != 0 || !strings.Contains(out, "5.1.1") ||
		!strings.Contains(out, "hard_bounce") {
		t.Fatalf("report recipient:\n%s", out)
	}

	// One-click unsubscribe with curl, on the URL exactly as delivered.
	lu := regexp.MustCompile(`List-Unsubscribe: <(https://[^>]+)>`).FindSubmatch(byTo["luis@example.test"].Data)
	if lu == nil {
		t.Fatalf("no List-Unsubscribe URL in\n%s", byTo["luis@example.test"].Data)
	}
	url := string(lu[1])
	_, apiPort, _ := net.SplitHostPort(srv.https)
	connect := sendingDomain + ":443:127.0.0.1:" + apiPort
	if out, err := exec.Command(curl, "-sS", "-k", "--connect-to", connect, url).CombinedOutput(); err != nil || !strings.Contains(string(out), "<form") {
		t.Fatalf("curl GET: %v\n%s", err, out)
	}
	if out, _ := relayd(t, dir, env, "suppression", "check", "luis@example.test", "--bulk", "--account", "sjti/talento", "--topic", "boletin"); !strings.Contains(out, "would go") {
		t.Fatalf("GET changed something:\n%s", out)
	}
	out, err := exec.Command(curl, "-sS", "-k", "--connect-to", connect, "-X", "POST", "-d", "List-Unsubscribe=One-Click", "-o", "/dev/null", "-w", "%{http_code}", url).CombinedOutput()
	if err != nil || string(out) != "200" {
		t.Fatalf("curl POST: %v %s", err, out)
	}
	next := send("luis@example.test", mailing.Bulk)
	if len(next.Suppressed) != 1 {
		t.Fatalf("next bulk mail after the unsubscribe: %+v", next)
	}
	tx := send("luis@example.test", mailing.Transactional)
	if len(tx.Suppressed) != 0 {
		t.Fatalf("transactional mail after the unsubscribe: %+v", tx)
	}
	status(tx, mailing.StatusSent)
	status(luis, mailing.StatusSent)

	// Never an open relay; a forged token is refused at RCPT.
	if out := swak("spam@example.net", "victim@gmail.com"); !strings.Contains(out, "<~* 550 5.7.1 ") {
		t.Fatalf("open relay attempt:\n%s", out)
	}
	forged := anaFrom[:len("b+")+3] + "-aaaaaaaaaaaaaaaa@" + sendingDomain
	if out := swak("<>", forged); !strings.Contains(out, "<~* 550 5.1.1 ") {
		t.Fatalf("forged token:\n%s", out)
	}
	// Mail to postmaster@ is kept for an admin; the CLI lists and shows what came in.
	note := filepath.Join(dir, "note.eml")
	if err := os.WriteFile(note, []byte("From: admin@isp.example\nSubject: Consulta sobre sus envios\n\nHola.\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := swak("admin@isp.example", "postmaster@"+sendingDomain, "--data", "@"+note); !strings.Contains(out, "<~  250 2.0.0 OK: queued") {
		t.Fatalf("swaks to postmaster:\n%s", out)
	}
	deadline := time.Now().Add(10 * time.Second)
	var list string
	for time.Now().Before(deadline) {
		list, _ = relayd(t, dir, env, "inbound", "list", "--mailbox", "postmaster")
		if strings.Contains(list, "unknown") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(list, "admin@isp.example") || !strings.Contains(list, "Consulta sobre sus envios") || !strings.Contains(list, "kept; nothing to do") {
		t.Fatalf("inbound list --mailbox postmaster:\n%s", list)
	}
	if out, code := relayd(t, dir, env, "inbound", "list", "--kind", "dsn"); code != 0 || !strings.Contains(out, anaFrom) || !strings.Contains(out, "suppressed (hard_bounce)") {
		t.Fatalf("inbound list --kind dsn: exit %d\n%s", code, out)
	}
	// The bytes as they came (swaks ends the data with one more CRLF).
	if out, code := relayd(t, dir, env, "inbound", "show", "1", "--raw"); code != 0 || out != strings.ReplaceAll(dsn, "\n", "\r\n")+"\r\n" {
		t.Fatalf("inbound show 1 --raw: exit %d\n%q\nwant\n%q", code, out, strings.ReplaceAll(dsn, "\n", "\r\n"))
	}
	if out, code := relayd(t, dir, env, "inbound", "show", "99"); code != 1 || !strings.Contains(out, "no inbound message 99") {
		t.Fatalf("inbound show 99: exit %d\n%s", code, out)
	}
	for _, args := range [][]string{{"quota", "verify"}, {"report", "verify"}} {
		if out, code := relayd(t, dir, env, args...); code != 0 {
			t.Fatalf("relayd %v: exit %d\n%s", args, code, out)
		}
	}
	srv.stop(t)
}
