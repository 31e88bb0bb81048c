package bounce

import (
	"regexp"
	"strings"
)

// statusFieldsRe recognises a delivery-status carried in a text part (some
// MTAs send one as text/plain): a per-recipient field and an Action or
// Status at the start of lines.
var (
	statusRcptRe  = regexp.MustCompile(`(?mi)^(?:final|original)-recipient[ \t]*:`)
	statusOtherRe = regexp.MustCompile(`(?mi)^(?:action|status)[ \t]*:`)
)

// looksLikeStatus reports whether a text body is really a delivery-status.
func looksLikeStatus(b []byte) bool {
	if len(b) > 64<<10 {
		b = b[:64<<10]
	}
	return statusRcptRe.Match(b) && statusOtherRe.Match(b)
}

// statusPart returns the decoded delivery-status of m: the report part, or
// a text part that holds one. ok is false when there is neither.
func (m *message) statusPart() ([]byte, bool) {
	if m.status != nil {
		return m.status.decoded(), true
	}
	for _, p := range m.parts {
		if p == m.returned || p == m.feedback || !strings.HasPrefix(p.ctype, "text/") || p.ctype == "text/rfc822-headers" {
			continue
		}
		if b := p.decoded(); looksLikeStatus(b) {
			return b, true
		}
	}
	return nil, false
}

// readStatus fills r from a delivery-status body: the per-message fields
// and one Recipient per recipient group. human is the human-readable part,
// read for groups that carry no Diagnostic-Code.
func readStatus(r *Report, body []byte, human string) {
	blocks := fieldBlocks(body)
	for _, b := range blocks {
		if r.ReportingMTA == "" {
			r.ReportingMTA = stripType(b.get("reporting-mta"))
		}
		if r.EnvelopeID == "" {
			r.EnvelopeID = strings.TrimSpace(b.get("original-envelope-id"))
		}
		if r.ArrivalDate.IsZero() {
			r.ArrivalDate = parseDate(b.get("arrival-date"))
		}
	}
	groups := 0
	for _, b := range blocks {
		if b.get("final-recipient") != "" || b.get("original-recipient") != "" {
			groups++
		}
	}
	for _, b := range blocks {
		if rc, ok := statusRecipient(b, human, groups == 1); ok {
			r.Recipients = append(r.Recipients, rc)
		}
	}
}

// statusRecipient reads one recipient group. alone says whether it is the
// report's only group (then the human text speaks of it).
func statusRecipient(b header, human string, alone bool) (Recipient, bool) {
	final, orig := normAddr(b.get("final-recipient")), normAddr(b.get("original-recipient"))
	if final == "" {
		final = orig
	}
	if final == "" {
		return Recipient{}, false
	}
	rc := Recipient{
		Final:          final,
		Original:       orig,
		Action:         strings.ToLower(strings.TrimSpace(b.get("action"))),
		Diagnostic:     stripType(b.get("diagnostic-code")),
		RemoteMTA:      stripType(b.get("remote-mta")),
		WillRetryUntil: parseDate(b.get("will-retry-until")),
	}
	rc.Action = normAction(rc.Action)
	status, ok := parseEnhanced(b.get("status"))
	if !ok || status.generic() {
		if d, dok := findEnhanced(rc.Diagnostic); dok && (!ok || !d.generic()) {
			status, ok = d, true
		}
	}
	if ok {
		rc.Status = status.String()
	}
	rc.Code = findBasic(rc.Diagnostic)
	if rc.Action == "" {
		rc.Action = inferAction(status, ok, rc.Code)
	}
	if rc.Action == "failed" || rc.Action == "delayed" {
		text := rc.Diagnostic
		if strings.TrimSpace(text) == "" && (alone || strings.Contains(strings.ToLower(human), strings.ToLower(final))) {
			text = human
		}
		rc.Class = Classify(rc.Code, rc.Status, text)
		if rc.Class == "" { // a 2.x.x status on a failed group
			rc.Class = Undetermined
		}
	}
	return rc, true
}

// normAction reads an Action value loosely: "failed (bad destination)",
// "Failure" and "FAILED" are all "failed".
func normAction(a string) string {
	if i := strings.IndexAny(a, " \t(;"); i >= 0 {
		a = a[:i]
	}
	for _, known := range []string{"failed", "delayed", "delivered", "relayed", "expanded"} {
		if len(a) >= 4 && strings.HasPrefix(known, a[:4]) {
			return known
		}
	}
	return a
}

// inferAction guesses the Action of a group that has none from its codes.
func inferAction(status enhancedCode, ok bool, code int) string {
	class := code / 100
	if ok {
		class = status.class
	}
	switch class {
	case 2:
		return "delivered"
	case 4:
		return "delayed"
	}
	return "failed"
}

// kindOfRecipients is the Kind of a report from its recipients' actions:
// any failed is a DSN, else any delayed is a delay warning, else a report
// of deliveries only is feedback.
func kindOfRecipients(rs []Recipient) Kind {
	var delayed, other bool
	for _, rc := range rs {
		switch rc.Action {
		case "failed":
			return KindDSN
		case "delayed":
			delayed = true
		case "delivered", "relayed", "expanded":
		default:
			other = true
		}
	}
	switch {
	case delayed:
		return KindDelayed
	case other || len(rs) == 0:
		return KindDSN
	}
	return KindFeedback
}
