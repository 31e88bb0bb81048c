package inbound_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
)

// FuzzInboundSession feeds arbitrary client bytes to a live MX ("TOKEN" in
// the input becomes a valid token). Whatever arrives, the server answers
// the next client, and every stored row is for an accepted mailbox of the
// sending domain, with the recipient its token names.
func FuzzInboundSession(f *testing.F) {
	for _, s := range []string{
		"EHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<b+TOKEN@" + domain + ">\r\nDATA\r\nSubject: x\r\n\r\nhola\r\n.\r\nQUIT\r\n",
		"HELO a\r\nMAIL FROM:<x@y>\r\nRCPT TO:<u+TOKEN@" + domain + ">\r\nRCPT TO:<victim@gmail.com>\r\nDATA\r\n\r\n.\r\n",
		"EHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster@" + domain + ">\r\nBDAT 5 LAST\r\nhello",
		"EHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<b+zz-aaaaaaaaaaaaaaaa@" + domain + ">\r\nDATA\r\n",
		"EHLO a\r\nSTARTTLS\r\n\x16\x03\x01\x00\x05hello",
		"MAIL FROM:<> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<B+TOKEN@ENVIOS.SERVIR.GOB.PE.>\r\nDATA\r\n\xff\xfe\r\n..\r\n.\r\n",
		"EHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<\"b+TOKEN\"@" + domain + ">\r\nRSET\r\nNOOP\r\nVRFY postmaster\r\n",
	} {
		f.Add([]byte(s))
	}
	db := storetest.Open(f, store.SQLite)
	m := startMX(f, db, nil, 64<<10)
	good := m.keys.Token(99)
	f.Fuzz(func(t *testing.T, in []byte) {
		in = bytes.ReplaceAll(in, []byte("TOKEN"), []byte(good))
		c, err := net.DialTimeout("tcp", m.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		go func() { _, _ = c.Write(in); _, _ = c.Write([]byte("\r\n.\r\nQUIT\r\n")) }()
		_, _ = io.Copy(io.Discard, c)
		c.Close()

		next := dial(t, m.addr) // the server still answers
		if got := next.do("NOOP"); !strings.HasPrefix(got, "250 ") {
			t.Fatalf("NOOP after the fuzzed session: %q", got)
		}
		var rows []mailstore.InboundRow
		if err := db.NewSelect().Model(&rows).Column("id", "rcpt", "mailbox", "recipient_id").Scan(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if !strings.HasSuffix(r.Rcpt, "@"+domain) {
				t.Fatalf("stored for %q: not the sending domain", r.Rcpt)
			}
			switch r.Mailbox {
			case "bounce", "unsubscribe":
				if r.RecipientID == nil || *r.RecipientID != 99 {
					t.Fatalf("row %d for %q names recipient %v", r.ID, r.Rcpt, r.RecipientID)
				}
			case "postmaster", "abuse", "fbl":
				if r.RecipientID != nil {
					t.Fatalf("row %d for %q names a recipient", r.ID, r.Rcpt)
				}
			default:
				t.Fatalf("row %d: mailbox %q", r.ID, r.Mailbox)
			}
		}
	})
}
