package bounce

import (
	"bytes"
	"errors"
	"time"
)

// Kind is what an inbound message is.
type Kind string

// The kinds of inbound message.
const (
	// KindDSN is a failure report (RFC 3464, or a non-standard bounce read
	// by the text rules).
	KindDSN Kind = "dsn"
	// KindDelayed is a DSN whose recipients are all Action: delayed, or a
	// text "delayed, still trying" warning.
	KindDelayed Kind = "delayed"
	// KindComplaint is an ARF (RFC 5965) report of type abuse, fraud, virus
	// or other (or of no known type), or a Microsoft JMRP complaint.
	KindComplaint Kind = "complaint"
	// KindAutoReply is an RFC 3834 automatic reply (vacation, out of
	// office), not a bounce.
	KindAutoReply Kind = "auto-reply"
	// KindFeedback asks for no action: ARF not-spam (RFC 6430) and
	// auth-failure (RFC 6591) reports, and delivery-status reports that only
	// say delivered, relayed or expanded.
	KindFeedback Kind = "feedback"
	// KindUnknown is anything else (a human reply, spam).
	KindUnknown Kind = "unknown"
)

// Report is what Read found in one inbound message.
type Report struct {
	Kind         Kind
	ReportingMTA string    // "dns; mx.example.com" → "mx.example.com"
	EnvelopeID   string    // Original-Envelope-Id
	ArrivalDate  time.Time // zero when absent or unparsable
	Recipients   []Recipient
	FeedbackType string // ARF Feedback-Type, lower case ("abuse"); "jmrp" for Microsoft JMRP
	// Returned is the returned message or its headers (message/rfc822,
	// message/global, text/rfc822-headers, or the tail of a text bounce
	// after an "----- Original message -----" style marker), at most
	// MaxReturned bytes.
	Returned []byte
	// Tokens are the candidate envios tokens found in the returned message
	// (or, when there is none, the whole body), in order of appearance,
	// without repeats, lower-cased: from b+TOKEN@ and u+TOKEN@ addresses
	// (Return-Path included) and /u/TOKEN URLs.
	Tokens []string
}

// Recipient is one per-recipient group of a DSN, one address found by the
// text rules, or the complained-about recipient of an ARF report when it
// is not redacted.
type Recipient struct {
	Final    string // Final-Recipient address, "rfc822; a@b" → "a@b", domain lower-cased
	Original string // Original-Recipient address (same normalisation), "" if absent
	// Action is failed, delayed, delivered, relayed or expanded (lower
	// case); the text rules set failed or delayed.
	Action string
	// Status is the RFC 3463 code ("5.1.1"), comment stripped; when the
	// Status is X.0.0 and the Diagnostic-Code carries a more specific code,
	// that one.
	Status     string
	Diagnostic string // Diagnostic-Code without the "smtp; " type, on one line
	RemoteMTA  string // Remote-MTA without "dns; "
	Code       int    // basic reply code found in the diagnostic (550), 0 if none
	// Class is Classify(Code, Status, Diagnostic) for failed and delayed
	// recipients (for a group without Diagnostic-Code, the human-readable
	// part's text stands in for it), "" for delivered, relayed, expanded.
	Class          Class
	WillRetryUntil time.Time // zero when absent
}

// MaxReturned is the most of the returned message a Report keeps.
const MaxReturned = 64 << 10

// ErrNotMessage is returned by Read for bytes that do not start with a
// header field: not a message at all.
var ErrNotMessage = errors.New("bounce: not a message (no header)")

// Read reads one raw inbound message (RFC 5322 bytes, possibly truncated,
// malformed or 8-bit). It returns an error only when the bytes are not a
// message at all; everything else is a Report, possibly KindUnknown. Parts
// are found by type anywhere in the MIME tree: an ARF report first, then a
// JMRP complaint, a delivery-status report, a non-standard bounce read by
// the text rules, an automatic reply. Read never panics.
func Read(raw []byte) (*Report, error) {
	b := skipMboxFrom(normalize(raw))
	h, body, ok := parseHeader(b)
	if !ok {
		return nil, ErrNotMessage
	}
	m := newMessage(h, body)
	r := &Report{Kind: KindUnknown}
	var tail []byte // the returned message quoted in a text bounce
	switch rcpt, jmrp := m.jmrpRecipient(); {
	case m.feedback != nil || m.reportType == "feedback-report":
		readARF(r, m)
	case jmrp:
		readJMRP(r, m, rcpt)
	default:
		tail = readBounce(r, m)
	}
	switch {
	case m.returned != nil:
		ret := m.returned.decoded()
		r.Tokens = findTokens(tokenText(ret, m.returned.ctype))
		r.Returned = clip(ret)
	case tail != nil:
		r.Tokens = findTokens(tail)
		r.Returned = clip(tail)
	default:
		r.Tokens = findTokens(m.allText())
	}
	return r, nil
}

// readBounce reads m as a delivery report, a text bounce or an automatic
// reply, in that order; it returns the returned message a text bounce
// quotes, if any.
func readBounce(r *Report, m *message) []byte {
	human, tail := splitReturned(m.humanText())
	if status, ok := m.statusPart(); ok {
		readStatus(r, status, human)
		if len(r.Recipients) == 0 {
			r.Recipients, _ = textBounce(m.header, human, true)
		}
		r.Kind = kindOfRecipients(r.Recipients)
		return tail
	}
	bounce := looksLikeBounce(m.header)
	if rs, ok := textBounce(m.header, human, bounce); ok {
		r.Recipients = rs
		r.Kind = kindOfRecipients(rs)
		return tail
	}
	switch {
	case bounce || m.reportType == "delivery-status":
		r.Kind = KindDSN
		return tail
	case isAutoReply(m.header):
		r.Kind = KindAutoReply
	}
	return nil
}

// clip copies at most MaxReturned bytes of b.
func clip(b []byte) []byte {
	if len(b) > MaxReturned {
		b = b[:MaxReturned]
	}
	if len(b) == 0 {
		return nil
	}
	return bytes.Clone(b)
}

// skipMboxFrom drops a leading mbox "From " separator line.
func skipMboxFrom(b []byte) []byte {
	if bytes.HasPrefix(b, []byte("From ")) {
		_, rest := nextLine(b)
		return rest
	}
	return b
}
