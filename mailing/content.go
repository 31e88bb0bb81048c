package mailing

import (
	"bytes"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"mime"
	"net/textproto"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode/utf8"

	"github.com/jhillyerd/enmime/v2"
)

// ErrContent is matched by every error about a message's content: a
// header, a template, a body, an attachment.
var ErrContent = errors.New("mailing: invalid content")

func contentErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrContent, fmt.Sprintf(format, args...))
}

// Header is an extra header to add to a message.
type Header struct {
	Name  string
	Value string
}

// reservedHeaders are set by envios itself (from Message fields, or at
// delivery) and may not be given as extra headers.
var reservedHeaders = map[string]bool{
	"From": true, "Sender": true, "To": true, "Cc": true, "Bcc": true, "Reply-To": true,
	"Subject": true, "Date": true, "Message-Id": true, "Mime-Version": true,
	"Content-Type": true, "Content-Transfer-Encoding": true, "Content-Disposition": true,
	"Return-Path": true, "Received": true, "Dkim-Signature": true,
	"List-Unsubscribe": true, "List-Unsubscribe-Post": true,
}

// checkHeaderValue refuses what could split or corrupt a header line.
func checkHeaderValue(what, v string) error {
	if strings.ContainsAny(v, "\r\n\x00") {
		return contentErr("%s contains CR, LF or NUL", what)
	}
	if !utf8.ValidString(v) {
		return contentErr("%s is not valid UTF-8", what)
	}
	if len(v) > 998 {
		return contentErr("%s is longer than 998 bytes", what)
	}
	return nil
}

func validateHeaders(hs []Header) error {
	if len(hs) > 50 {
		return contentErr("more than 50 extra headers")
	}
	for _, h := range hs {
		if h.Name == "" || len(h.Name) > 76 {
			return contentErr("header name %q must be 1 to 76 characters", h.Name)
		}
		// RFC 5322 allows any printable ASCII but ':' in a field name; real
		// parsers (Go's net/textproto among them) accept only tokens, so
		// envios keeps to letters, digits and hyphens.
		for i := 0; i < len(h.Name); i++ {
			if c := h.Name[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return contentErr("header name %q has a character not allowed in a field name (letters, digits, hyphens)", h.Name)
			}
		}
		canon := textproto.CanonicalMIMEHeaderKey(h.Name)
		if reservedHeaders[canon] || strings.HasPrefix(canon, "X-Envios-") {
			return contentErr("header %s is set by envios and cannot be given as an extra header", canon)
		}
		if err := checkHeaderValue("header "+canon, h.Value); err != nil {
			return err
		}
	}
	return nil
}

// Attachment is a file attached to a message, or shown inline (an image
// an HTML body refers to as cid:ContentID) when ContentID is set.
type Attachment struct {
	Filename    string
	ContentType string // default: from the file name's extension, else application/octet-stream
	ContentID   string // set for an inline part
	Data        []byte
}

func validateAttachments(as []Attachment) error {
	for i := range as {
		a := &as[i]
		if err := checkHeaderValue("attachment file name", a.Filename); err != nil {
			return err
		}
		if a.Filename == "" || strings.ContainsAny(a.Filename, `/\`) {
			return contentErr("attachment %d: file name %q must be a plain, non-empty name", i, a.Filename)
		}
		if a.ContentType == "" {
			if i := strings.LastIndexByte(a.Filename, '.'); i >= 0 {
				a.ContentType = mime.TypeByExtension(a.Filename[i:])
			}
			if a.ContentType == "" {
				a.ContentType = "application/octet-stream"
			}
		}
		if _, _, err := mime.ParseMediaType(a.ContentType); err != nil || strings.ContainsAny(a.ContentType, "\r\n") {
			return contentErr("attachment %s: content type %q is not a media type", a.Filename, a.ContentType)
		}
		if err := checkHeaderValue("attachment content id", a.ContentID); err != nil {
			return err
		}
		if strings.ContainsAny(a.ContentID, "<> ") {
			return contentErr("attachment %s: content id %q must not contain <, > or spaces", a.Filename, a.ContentID)
		}
	}
	return nil
}

// templates is a batch's parsed content: subject and text with
// text/template, HTML with html/template (contextual auto-escaping). A field
// missing from a recipient's data is an error, never "<no value>".
type templates struct {
	maxOutput int // bytes each part may render to
	subject   *texttemplate.Template
	text      *texttemplate.Template // nil: no text part
	html      *htmltemplate.Template // nil: no HTML part
}

func parseTemplates(subject string, text, html *string, maxOutput int) (*templates, error) {
	t := &templates{maxOutput: maxOutput}
	var err error
	if t.subject, err = texttemplate.New("subject").Option("missingkey=error").Parse(subject); err != nil {
		return nil, contentErr("subject template: %v", err)
	}
	if text != nil {
		if t.text, err = texttemplate.New("text").Option("missingkey=error").Parse(*text); err != nil {
			return nil, contentErr("text template: %v", err)
		}
	}
	if html != nil {
		if t.html, err = htmltemplate.New("html").Option("missingkey=error").Parse(*html); err != nil {
			return nil, contentErr("HTML template: %v", err)
		}
	}
	return t, nil
}

// rendered is one recipient's content.
type rendered struct {
	subject    string
	text, html *string
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

func (t *templates) render(data any) (rendered, error) {
	var r rendered
	b := cappedBuffer{max: t.maxOutput}
	if err := t.subject.Execute(&b, data); err != nil {
		return r, contentErr("subject: %v", cleanTemplateErr(err))
	}
	r.subject = b.String()
	if err := checkHeaderValue("rendered subject", r.subject); err != nil {
		return r, err
	}
	if t.text != nil {
		b.Reset()
		if err := t.text.Execute(&b, data); err != nil {
			return r, contentErr("text: %v", cleanTemplateErr(err))
		}
		s := b.String()
		r.text = &s
	}
	if t.html != nil {
		b.Reset()
		if err := t.html.Execute(&b, data); err != nil {
			return r, contentErr("HTML: %v", cleanTemplateErr(err))
		}
		s := b.String()
		r.html = &s
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

// part is everything needed to build one recipient's message.
type part struct {
	from     Address
	replyTo  []Address
	to, cc   []Address // header recipients (Bcc never appear)
	subject  string
	text     *string
	html     *string
	headers  []Header
	attach   []Attachment
	date     time.Time
	msgID    string // without angle brackets
	boundary int64  // seed for MIME boundaries, so a rebuild is byte-identical
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

// build renders the RFC 5322 message. Every header value has been checked
// for CR and LF before it gets here, and enmime encodes non-ASCII values
// (RFC 2047) and the bodies (quoted-printable or base64).
func build(p part) ([]byte, error) {
	mb := enmime.Builder().
		From(p.from.Name, p.from.Addr).
		Subject(p.subject).
		Date(p.date).
		Header("Message-ID", "<"+p.msgID+">")
	for _, a := range p.to {
		mb = mb.To(a.Name, a.Addr)
	}
	for _, a := range p.cc {
		mb = mb.CC(a.Name, a.Addr)
	}
	if len(p.to)+len(p.cc) == 0 {
		// Only Bcc recipients: the header says so (RFC 5322 §3.6.3), and
		// enmime, which wants some recipient, gets the sender as a Bcc it
		// never writes into the headers.
		mb = mb.Header("To", "undisclosed-recipients:;")
		mb = mb.BCC("", p.from.Addr)
	}
	for _, a := range p.replyTo {
		mb = mb.ReplyTo(a.Name, a.Addr)
	}
	for _, h := range p.headers {
		mb = mb.Header(h.Name, h.Value)
	}
	if p.text != nil {
		mb = mb.Text([]byte(*p.text))
	}
	if p.html != nil {
		mb = mb.HTML([]byte(*p.html))
	}
	for _, a := range p.attach {
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
			pt.Boundary = boundary(p.boundary, n)
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
