package bounce

import (
	"regexp"
	"strings"
)

// feedbackKinds maps an ARF Feedback-Type to what the report is. abuse,
// fraud, virus and other are complaints (RFC 5965 §7.3); not-spam (RFC
// 6430) and auth-failure (RFC 6591, a DMARC failure report) are not.
// A missing or unknown type counts as a complaint.
var feedbackKinds = map[string]Kind{
	"abuse":        KindComplaint,
	"fraud":        KindComplaint,
	"virus":        KindComplaint,
	"other":        KindComplaint,
	"not-spam":     KindFeedback,
	"auth-failure": KindFeedback,
}

// redactedRe matches a recipient a provider has redacted (RFC 6590):
// "xxxxxxx@example.com", "redacted@example.com", "[redacted]".
var redactedRe = regexp.MustCompile(`(?i)^(?:[x*#.]+|.*redacted.*)@|^\[?redacted\]?$`)

// readARF fills r from an RFC 5965 feedback report.
func readARF(r *Report, m *message) {
	var f header
	if m.feedback != nil {
		for _, b := range fieldBlocks(m.feedback.decoded()) {
			f = append(f, b...)
		}
	}
	r.FeedbackType = strings.ToLower(strings.TrimSpace(f.get("feedback-type")))
	r.Kind = KindComplaint
	if k, ok := feedbackKinds[r.FeedbackType]; ok {
		r.Kind = k
	}
	r.ReportingMTA = stripType(f.get("reporting-mta"))
	r.EnvelopeID = strings.TrimSpace(f.get("original-envelope-id"))
	r.ArrivalDate = parseDate(f.get("arrival-date"))
	if r.ArrivalDate.IsZero() {
		r.ArrivalDate = parseDate(f.get("received-date"))
	}
	seen := map[string]bool{}
	for _, v := range append(f.all("original-rcpt-to"), f.all("removal-recipient")...) {
		a := normAddr(v)
		if a == "" || seen[a] || redactedRe.MatchString(a) {
			continue
		}
		seen[a] = true
		r.Recipients = append(r.Recipients, Recipient{Final: a})
	}
}

// jmrpRecipient returns the X-HmXmrOriginalRecipient of a Microsoft JMRP
// complaint (an attached message/rfc822 carrying that header), ok false
// when m is not one.
func (m *message) jmrpRecipient() (string, bool) {
	for _, p := range m.parts {
		if p.ctype != "message/rfc822" && p.ctype != "text/rfc822-headers" {
			continue
		}
		h, _, _ := parseHeader(p.decoded())
		if v := h.get("x-hmxmroriginalrecipient"); v != "" {
			return normAddr(v), true
		}
	}
	if v := m.header.get("x-hmxmroriginalrecipient"); v != "" {
		return normAddr(v), true
	}
	return "", false
}

// readJMRP fills r from a Microsoft JMRP complaint about recipient rcpt.
func readJMRP(r *Report, m *message, rcpt string) {
	r.Kind = KindComplaint
	r.FeedbackType = "jmrp"
	r.ArrivalDate = parseDate(m.header.get("date"))
	if rcpt != "" {
		r.Recipients = []Recipient{{Final: rcpt}}
	}
	for _, p := range m.parts {
		if p.ctype == "message/rfc822" {
			m.returned = p
			break
		}
	}
}
