package smtp

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

// gatedReader gives the server's replies to a client. Past the first
// part (greeting and EHLO reply), it refuses to be read until the client
// has written exactly want: a pipelining client writes its commands before
// it waits for their replies.
type gatedReader struct {
	first, rest io.Reader
	wrote       *bytes.Buffer
	want        string
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if n, err := g.first.Read(p); n > 0 || err != io.EOF {
		return n, err
	}
	if g.want != "" {
		if got := g.wrote.String(); got != g.want {
			return 0, fmt.Errorf("reply read before the pipeline was written; wrote %q", got)
		}
		g.want = ""
	}
	return g.rest.Read(p)
}

// envios patch 8: PipelineMail writes MAIL, the RCPTs and DATA at once
// (RFC 2920) and matches each reply to its command.
func TestClient_PipelineMail(t *testing.T) {
	const pipeline = "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<nobody@example.org>\r\n" +
		"RCPT TO:<c@example.org>\r\nDATA\r\n"
	var wrote bytes.Buffer
	gate := &gatedReader{
		first: strings.NewReader("220 hello world\r\n250-mx.example\r\n250 PIPELINING\r\n"),
		rest: strings.NewReader("250 2.1.0 Sender ok\r\n250 2.1.5 Ok\r\n550 5.1.1 No such user\r\n250 2.1.5 Ok\r\n" +
			"354 Go ahead\r\n250 2.0.0 Queued\r\n221 2.0.0 Bye\r\n"),
		wrote: &wrote,
		want:  "EHLO localhost\r\n" + pipeline,
	}
	var fake faker
	fake.ReadWriter = struct {
		io.Reader
		io.Writer
	}{gate, &wrote}
	c := NewClient(fake)

	mailErr, rcptErrs, d, dataErr := c.PipelineMail("a@example.org", []string{"b@example.org", "nobody@example.org", "c@example.org"}, nil, nil)
	if mailErr != nil || dataErr != nil {
		t.Fatalf("MAIL: %v, DATA: %v", mailErr, dataErr)
	}
	if len(rcptErrs) != 3 || rcptErrs[0] != nil || rcptErrs[2] != nil {
		t.Fatalf("RCPT errors %v, want only the second", rcptErrs)
	}
	if se, ok := rcptErrs[1].(*SMTPError); !ok || se.Code != 550 || se.EnhancedCode != (EnhancedCode{5, 1, 1}) {
		t.Fatalf("second RCPT: %#v, want the 550 5.1.1", rcptErrs[1])
	}
	if _, err := io.WriteString(d, "Subject: pipelined\r\n\r\nHey <3\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	if got, want := wrote.String(), "EHLO localhost\r\n"+pipeline+"Subject: pipelined\r\n\r\nHey <3\r\n.\r\nQUIT\r\n"; got != want {
		t.Fatalf("wrote %q, want %q", got, want)
	}
}

// envios patch 8: PipelineMail writes MAIL's and each RCPT's parameters
// as Mail and Rcpt do: the DSN ones (RFC 3461) when the server offers DSN.
func TestClient_PipelineMailDSN(t *testing.T) {
	const pipeline = "MAIL FROM:<b+tok@bounce.example> RET=HDRS ENVID=tok\r\n" +
		"RCPT TO:<b@example.org> NOTIFY=FAILURE ORCPT=RFC822;b@example.org\r\nRCPT TO:<c@example.org>\r\nDATA\r\n"
	var wrote bytes.Buffer
	gate := &gatedReader{
		first: strings.NewReader("220 hello world\r\n250-mx.example\r\n250-DSN\r\n250 PIPELINING\r\n"),
		rest:  strings.NewReader("250 2.1.0 Sender ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 Go ahead\r\n250 2.0.0 Queued\r\n"),
		wrote: &wrote,
		want:  "EHLO localhost\r\n" + pipeline,
	}
	var fake faker
	fake.ReadWriter = struct {
		io.Reader
		io.Writer
	}{gate, &wrote}
	c := NewClient(fake)
	mailErr, rcptErrs, d, dataErr := c.PipelineMail("b+tok@bounce.example", []string{"b@example.org", "c@example.org"},
		&MailOptions{Return: DSNReturnHeaders, EnvelopeID: "tok"},
		[]*RcptOptions{{Notify: []DSNNotify{DSNNotifyFailure}, OriginalRecipientType: DSNAddressTypeRFC822, OriginalRecipient: "b@example.org"}})
	if mailErr != nil || dataErr != nil || rcptErrs[0] != nil || rcptErrs[1] != nil {
		t.Fatalf("MAIL %v, RCPT %v, DATA %v", mailErr, rcptErrs, dataErr)
	}
	if _, err := io.WriteString(d, "Subject: x\r\n\r\nx\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(wrote.String(), "EHLO localhost\r\n"+pipeline) {
		t.Fatalf("wrote %q", wrote.String())
	}
}
