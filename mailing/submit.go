package mailing

import (
	"context"
	"mime"
	"net/mail"
	"strings"
	"time"

	"github.com/servir-pe/envios/internal/mailerr"
	"github.com/servir-pe/envios/quota"
)

// Submission is a message submitted whole — as an SMTP client sends it —
// with the envelope recipients it goes to.
type Submission struct {
	Account string // "area/name"; required

	// EnvelopeFrom, when set, is the envelope sender (SMTP MAIL FROM); it
	// must be a sender identity of the account too, checked in the
	// transaction that stores the message.
	EnvelopeFrom string

	// Recipients are the envelope recipients (SMTP RCPT TO): who gets the
	// message, whatever its To and Cc fields say. Those not named in To or
	// Cc are recorded as bcc.
	Recipients []string

	// Message is the RFC 5322 message, CRLF line endings throughout.
	Message []byte

	Origin quota.Origin // default quota.OriginSMTP
	Actor  string       // who submits, for the ledger: default "smtp"

	// Trace, when set, is written as a Received field at the top of the
	// message.
	Trace *Trace
}

// The directive fields a submitted message may carry to use what Message
// offers as struct fields. Submit reads and removes them: they are never
// delivered. Any other X-Envios- field is refused.
const (
	HeaderSendAt         = "X-Envios-Send-At"         // RFC 3339 time: deliver then, not now
	HeaderIdempotencyKey = "X-Envios-Idempotency-Key" // the same key for the account returns the first message
	HeaderCampaign       = "X-Envios-Campaign"        // campaign name for reports
	HeaderPriority       = "X-Envios-Priority"        // transactional (default) or bulk
	HeaderTags           = "X-Envios-Tags"            // comma-separated tags
)

// ParseTimeout bounds how long Submit spends reading a message's MIME
// structure.
const ParseTimeout = 10 * time.Second

// Submit accepts a message submitted whole. It checks and changes the
// message as a submission server does (RFC 6409 §8): exactly one From,
// which with Sender (if any) must be identities of the account; Bcc and
// Resent-Bcc are removed, and Return-Path and Content-Length too, as
// Postfix's cleanup removes them (the receiving server writes Return-Path
// from the envelope, and a length is wrong once the message is changed);
// Message-ID and Date are added when missing; a Received field is added on
// top when the submission carries a Trace; the X-Envios- directive fields
// are read and removed. Bare CR or LF and NUL anywhere are refused, and
// so is a message whose MIME structure cannot be read (structure.go).
// Then, like Send, it charges one message per recipient and stores the
// message and its recipients in one transaction: nil means committed.
//
// Errors are those of Send; every problem with the message itself matches
// ErrContent (and names the field) or ErrTooBig.
func (m *Mailer) Submit(ctx context.Context, s Submission) (Receipt, error) {
	r, err := m.submit(ctx, s)
	return r, refusal(err)
}

func (m *Mailer) submit(ctx context.Context, s Submission) (Receipt, error) {
	if err := m.enter(); err != nil {
		return Receipt{}, err
	}
	defer m.inflight.Done()
	if len(s.Message) > m.cfg.MaxMessageSize {
		return Receipt{}, mailerr.New(ErrTooBig, "message", "%d bytes, the limit is %d", len(s.Message), m.cfg.MaxMessageSize)
	}
	var c common
	var err error
	if c.account, _, err = quota.ParseAccountName(s.Account); err != nil {
		return Receipt{}, err
	}
	fields, body, err := splitHeader(s.Message)
	if err != nil {
		return Receipt{}, err
	}
	if err := checkBody(body); err != nil {
		return Receipt{}, err
	}
	kept, err := c.directives(fields, s.Origin, s.Actor)
	if err != nil {
		return Receipt{}, err
	}
	senders, err := c.originators(kept, s.EnvelopeFrom)
	if err != nil {
		return Receipt{}, err
	}
	rcpts, err := envelopeRecipients(kept, s.Recipients, m.cfg.MaxRecipients)
	if err != nil {
		return Receipt{}, err
	}
	id, now := m.cfg.NewID(), m.now()
	raw, rfcID, err := m.submitted(kept, body, id, now, s.Trace)
	if err != nil {
		return Receipt{}, err
	}
	if err := checkStructure(ctx, raw); err != nil {
		return Receipt{}, err
	}
	c.size = len(raw)
	return m.commit(ctx, &pending{c: c, id: id, rfcID: rfcID, rcpts: rcpts.list, raw: raw, senders: senders, now: now})
}

// directives reads the X-Envios- fields into c's options and returns the
// other fields.
func (c *common) directives(fields []field, origin quota.Origin, actor string) ([]field, error) {
	var err error
	var kept []field
	d := map[string]string{}
	for _, f := range fields {
		if len(f.Name) < len("X-Envios-") || !strings.EqualFold(f.Name[:len("X-Envios-")], "X-Envios-") {
			kept = append(kept, f)
			continue
		}
		name := canonicalDirective(f.Name)
		if name == "" {
			return nil, contentErr("message", "%s: unknown X-Envios- field (known: %s, %s, %s, %s, %s)", f.Name,
				HeaderSendAt, HeaderIdempotencyKey, HeaderCampaign, HeaderPriority, HeaderTags)
		}
		if _, dup := d[name]; dup {
			return nil, contentErr("message", "%s: given twice", name)
		}
		d[name] = f.Value()
	}
	var sendAt time.Time
	if v, ok := d[HeaderSendAt]; ok {
		if sendAt, err = time.Parse(time.RFC3339, v); err != nil {
			return nil, contentErr("message", "%s: %q is not an RFC 3339 time such as 2026-12-01T09:00:00-05:00", HeaderSendAt, v)
		}
	}
	prio := Transactional
	if v, ok := d[HeaderPriority]; ok {
		prio = Priority(strings.ToLower(v))
		if _, err := prio.rank(); err != nil {
			return nil, contentErr("message", "%s: %q must be transactional or bulk", HeaderPriority, v)
		}
	}
	var tags []string
	if v, ok := d[HeaderTags]; ok {
		for _, t := range strings.Split(v, ",") {
			tags = append(tags, strings.TrimSpace(t))
		}
	}
	if origin == "" {
		origin = quota.OriginSMTP
	}
	if actor == "" {
		actor = "smtp"
	}
	// Each directive alone first, so that an error names its field.
	for _, probe := range []struct {
		name string
		err  error
	}{
		{HeaderTags, new(common).setOptions(tags, "", prio, sendAt, "", origin, actor)},
		{HeaderCampaign, new(common).setOptions(nil, d[HeaderCampaign], prio, sendAt, "", origin, actor)},
		{HeaderIdempotencyKey, new(common).setOptions(nil, "", prio, sendAt, d[HeaderIdempotencyKey], origin, actor)},
	} {
		if probe.err != nil {
			return nil, mailerr.Within("message", probe.name, probe.err)
		}
	}
	return kept, c.setOptions(tags, d[HeaderCampaign], prio, sendAt, d[HeaderIdempotencyKey], origin, actor)

}

// originators reads From (into c), Sender and the subject, and returns
// the addresses besides From that must be the account's identities: the
// envelope sender and Sender.
func (c *common) originators(kept []field, envelopeFrom string) ([]string, error) {
	from, ok, err := single(kept, "From")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, contentErr("message", "the message has no From field")
	}
	if c.from, err = headerAddress("From", from); err != nil {
		return nil, err
	}
	var senders []string
	if envelopeFrom != "" {
		a, err := ParseAddress(envelopeFrom)
		if err != nil {
			return nil, mailerr.Within("message", "envelope sender", err)
		}
		senders = append(senders, a.Addr)
	}
	if v, ok, err := single(kept, "Sender"); err != nil {
		return nil, err
	} else if ok {
		a, err := headerAddress("Sender", v)
		if err != nil {
			return nil, err
		}
		senders = append(senders, a.Addr)
	}
	subject, _, err := single(kept, "Subject")
	if err != nil {
		return nil, err
	}
	if dec, err := new(mime.WordDecoder).DecodeHeader(subject); err == nil {
		subject = dec
	}
	// A decoded encoded-word may hold CR, LF or NUL, and a raw subject (or
	// an encoded-word that lies about its charset) octets that are not
	// UTF-8: either would fail PostgreSQL's insert, and with it every
	// message of the group transaction.
	c.subject = headerText(subject)

	return senders, nil
}

// envelopeRecipients are the envelope's recipients, recorded as to or cc
// when the header names them (To wins over Cc), else bcc.
func envelopeRecipients(kept []field, envelope []string, most int) (recipients, error) {
	kinds := map[string]string{}
	for _, k := range []string{"Cc", "To"} { // To wins over Cc
		for _, f := range fieldsNamed(kept, k) {
			list, _ := mail.ParseAddressList(f.Value()) // a malformed list only makes its addresses bcc
			for _, a := range list {
				kinds[strings.ToLower(a.Address)] = strings.ToLower(k)
			}
		}
	}
	var rcpts recipients
	for _, r := range envelope {
		a, err := ParseAddress(r)
		if err != nil {
			return recipients{}, mailerr.Within("recipients", "recipient", err)
		}
		kind := kinds[strings.ToLower(a.Addr)]
		if kind == "" {
			kind = "bcc"
		}
		rcpts.add(Address{Addr: a.Addr}, kind)
	}
	if err := rcpts.check("recipients", most); err != nil {
		return recipients{}, err
	}

	return rcpts, nil
}

// submitted is the message as stored, after the submission server's
// changes (RFC 6409 §8): the fields removedOnSubmit drops are gone, a
// Message-ID and a Date are added when missing, and the Received field
// of the session's trace goes on top. It returns the Message-ID too.
func (m *Mailer) submitted(kept []field, body []byte, id string, now time.Time, trace *Trace) ([]byte, string, error) {
	var out []field
	for _, f := range kept {
		if !removedOnSubmit(f.Name) {
			out = append(out, f)
		}
	}
	msgID, ok, err := single(out, "Message-ID")
	if err != nil {
		return nil, "", err
	}
	rfcID, valid := msgIDInside(msgID)
	if !ok || !valid {
		if ok {
			return nil, "", contentErr("message", "Message-ID: %q is not <id@domain>", msgID)
		}
		rfcID = id + "@" + m.cfg.MessageIDDomain
		out = append(out, newField("Message-ID", "<"+rfcID+">"))
	}
	if _, ok, err := single(out, "Date"); err != nil {
		return nil, "", err
	} else if !ok {
		out = append(out, newField("Date", now.Format(time.RFC1123Z)))
	}
	if trace != nil {
		out = append([]field{trace.received(id, now)}, out...)
	}
	n := fieldsSize(out)
	if body != nil {
		n += 2 + len(body)
	}
	raw := appendFields(make([]byte, 0, n), out) // one allocation: with an attachment a message is 140 KB
	if body != nil {
		raw = append(raw, "\r\n"...)
		raw = append(raw, body...)
	}
	return raw, rfcID, nil
}

func canonicalDirective(name string) string {
	for _, h := range []string{HeaderSendAt, HeaderIdempotencyKey, HeaderCampaign, HeaderPriority, HeaderTags} {
		if strings.EqualFold(name, h) {
			return h
		}
	}
	return ""
}

// headerAddress reads the single mailbox of an originator field.
func headerAddress(name, v string) (Address, error) {
	list, err := (&mail.AddressParser{WordDecoder: new(mime.WordDecoder)}).ParseList(v)
	if err != nil || len(list) != 1 {
		return Address{}, contentErr("message", "%s: %q must be exactly one address", name, v)
	}
	a, err := ParseAddress(list[0].Address)
	if err != nil {
		return Address{}, mailerr.Within("message", name, err)
	}
	a.Name = headerText(list[0].Name)
	return a, nil
}

// headerText is what envios keeps of a decoded display name or subject
// (the message itself is stored as submitted): one line (no CR or LF),
// without NUL, in valid UTF-8 (an invalid octet becomes U+FFFD), which
// both databases store.
func headerText(s string) string {
	return strings.ToValidUTF8(lineBreaksAndNUL.Replace(s), "\uFFFD")
}

var lineBreaksAndNUL = strings.NewReplacer("\r", "", "\n", "", "\x00", "")

// msgIDInside returns what is between the angle brackets of a Message-ID
// field's value and whether the value is one (RFC 5322 §3.6.4:
// "<" id-left "@" id-right ">"), in printable ASCII without spaces.
func msgIDInside(v string) (string, bool) {
	in, open := strings.CutPrefix(v, "<")
	in, closed := strings.CutSuffix(in, ">")
	left, right, at := strings.Cut(in, "@")
	return in, open && closed && at && left != "" && right != "" &&
		!strings.ContainsFunc(in, func(r rune) bool { return r < 0x21 || r > 0x7e || r == '<' || r == '>' })
}

// removedOnSubmit names the fields Submit takes out of a message.
func removedOnSubmit(name string) bool {
	for _, n := range []string{"Bcc", "Resent-Bcc", "Return-Path", "Content-Length"} {
		if strings.EqualFold(name, n) {
			return true
		}
	}
	return false
}
