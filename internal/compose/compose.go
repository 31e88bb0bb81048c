// Package compose builds RFC 5322 messages: the MIME tree of a message's
// bodies, attachments and inline parts (enmime, RFC 2045–2047), with
// boundaries derived from a seed so that a rebuild is byte-identical, and
// a batch's templates (text/template, html/template) rendered with a
// recipient's data within an output budget.
package compose

import (
	"bytes"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode/utf8"

	"github.com/jhillyerd/enmime/v2"

	"github.com/servir-pe/envios/internal/address"
	"github.com/servir-pe/envios/internal/mailerr"
)

// Header is an extra header to add to a message.
type Header struct {
	Name  string
	Value string
}

// Attachment is a file attached to a message, or shown inline (an image
// an HTML body refers to as cid:ContentID) when ContentID is set.
type Attachment struct {
	Filename    string
	ContentType string // default: from the file name's extension, else application/octet-stream
	ContentID   string // set for an inline part
	Data        []byte
}

// CheckHeaderValue refuses what could split or corrupt a header line.
func CheckHeaderValue(field, what, v string) error {
	if strings.ContainsAny(v, "\r\n\x00") {
		return mailerr.Content(field, "%s contains CR, LF or NUL", what)
	}
	if !utf8.ValidString(v) {
		return mailerr.Content(field, "%s is not valid UTF-8", what)
	}
	if len(v) > 998 {
		return mailerr.Content(field, "%s is longer than 998 bytes", what)
	}
	return nil
}

// Templates is a batch's parsed content: subject and text with
// text/template, HTML with html/template (contextual auto-escaping). A field
// missing from a recipient's data is an error, never "<no value>".
type Templates struct {
	maxOutput int // bytes each part may render to
	subject   *texttemplate.Template
	text      *texttemplate.Template // nil: no text part
	html      *htmltemplate.Template // nil: no HTML part
}

// ParseTemplates parses a batch's subject, text and HTML templates; a
// recipient's rendering may produce at most maxOutput bytes of each.
func ParseTemplates(subject string, text, html *string, maxOutput int) (*Templates, error) {
	t := &Templates{maxOutput: maxOutput}
	var err error
	if t.subject, err = texttemplate.New("subject").Option("missingkey=error").Parse(subject); err != nil {
		return nil, mailerr.Content("subject", "subject template: %v", err)
	}
	if text != nil {
		if t.text, err = texttemplate.New("text").Option("missingkey=error").Parse(*text); err != nil {
			return nil, mailerr.Content("text", "text template: %v", err)
		}
	}
	if html != nil {
		if t.html, err = htmltemplate.New("html").Option("missingkey=error").Parse(*html); err != nil {
			return nil, mailerr.Content("html", "HTML template: %v", err)
		}
	}
	return t, nil
}

// Rendered is one recipient's content.
type Rendered struct {
	Subject    string
	Text, HTML *string
}

// errOutputTooBig stops a template whose output outgrows its limit (say,
// {{range 1000000000}}), so a template cannot exhaust memory or time.
var errOutputTooBig = errors.New("output larger than the message size limit")

// cappedBuffer is a bytes.Buffer that refuses to grow past max bytes.
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, errOutputTooBig
	}
	return b.Buffer.Write(p)
}

// Render executes the templates with a recipient's data.
func (t *Templates) Render(data any) (Rendered, error) {
	var r Rendered
	b := cappedBuffer{max: t.maxOutput}
	if err := t.subject.Execute(&b, data); err != nil {
		return r, mailerr.Content("data", "subject: %v", cleanTemplateErr(err))
	}
	r.Subject = b.String()
	if err := CheckHeaderValue("subject", "rendered subject", r.Subject); err != nil {
		return r, err
	}
	if t.text != nil {
		b.Reset()
		if err := t.text.Execute(&b, data); err != nil {
			return r, mailerr.Content("data", "text: %v", cleanTemplateErr(err))
		}
		s := b.String()
		r.Text = &s
	}
	if t.html != nil {
		b.Reset()
		if err := t.html.Execute(&b, data); err != nil {
			return r, mailerr.Content("data", "HTML: %v", cleanTemplateErr(err))
		}
		s := b.String()
		r.HTML = &s
	}
	return r, nil
}

func cleanTemplateErr(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "map has no entry for key "); i >= 0 {
		return "missing field " + msg[i+len("map has no entry for key "):]
	}
	return msg
}

// Part is everything needed to build one recipient's message.
type Part struct {
	From     address.Address
	ReplyTo  []address.Address
	To, Cc   []address.Address // header recipients (Bcc never appear)
	Subject  string
	Text     *string
	HTML     *string
	Headers  []Header
	Attach   []Attachment
	Date     time.Time
	MsgID    string // without angle brackets
	Boundary int64  // seed for MIME boundaries, so a rebuild is byte-identical
}

// boundary is the MIME boundary of the n-th multipart part of the message
// whose seed is seed: unpredictable-looking, and the same on every rebuild.
func boundary(seed int64, n int) string {
	a := splitmix64(uint64(seed))
	b := splitmix64(a ^ uint64(n+1))
	return fmt.Sprintf("envios-%016x%016x", a, b)
}

// splitmix64 is the SplitMix64 finaliser (Steele, Lea, Flood 2014).
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Build renders the RFC 5322 message. Every header value has been checked
// for CR and LF before it gets here, and enmime encodes non-ASCII values
// (RFC 2047) and the bodies (quoted-printable or base64).
func Build(p Part) ([]byte, error) {
	mb := enmime.Builder().
		From(p.From.Name, p.From.Addr).
		Subject(p.Subject).
		Date(p.Date).
		Header("Message-ID", "<"+p.MsgID+">")
	for _, a := range p.To {
		mb = mb.To(a.Name, a.Addr)
	}
	for _, a := range p.Cc {
		mb = mb.CC(a.Name, a.Addr)
	}
	if len(p.To)+len(p.Cc) == 0 {
		// Only Bcc recipients: the header says so (RFC 5322 §3.6.3), and
		// enmime, which wants some recipient, gets the sender as a Bcc it
		// never writes into the headers.
		mb = mb.Header("To", "undisclosed-recipients:;")
		mb = mb.BCC("", p.From.Addr)
	}
	for _, a := range p.ReplyTo {
		mb = mb.ReplyTo(a.Name, a.Addr)
	}
	for _, h := range p.Headers {
		mb = mb.Header(h.Name, h.Value)
	}
	if p.Text != nil {
		mb = mb.Text([]byte(*p.Text))
	}
	if p.HTML != nil {
		mb = mb.HTML([]byte(*p.HTML))
	}
	for _, a := range p.Attach {
		if a.ContentID != "" {
			mb = mb.AddInline(a.Data, a.ContentType, a.Filename, a.ContentID)
		} else {
			mb = mb.AddAttachment(a.Data, a.ContentType, a.Filename)
		}
	}
	root, err := mb.Build()
	if err != nil {
		return nil, fmt.Errorf("mailing: build message: %w", err)
	}
	// Boundaries from the seed, not enmime's RandSeed: that seeds a
	// math/rand source per message, which cost 5% of delivery's CPU.
	n := 0
	_ = root.DepthMatchAll(func(pt *enmime.Part) bool {
		if pt.FirstChild != nil {
			pt.Boundary = boundary(p.Boundary, n)
			n++
		}
		return false
	})
	var buf bytes.Buffer
	if err := root.Encode(&buf); err != nil {
		return nil, fmt.Errorf("mailing: encode message: %w", err)
	}
	return buf.Bytes(), nil
}
