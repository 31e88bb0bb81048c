package bounce

import "strings"

// Class is what a failure says about the recipient (RFC 3463 subject).
type Class string

// The classes of a failure, from the enhanced status code's subject and
// detail (RFC 3463 §3.1–3.8, the design notes' table) and the text rules.
const (
	// Hard: the address does not exist (X.1.1, X.1.2, X.1.3, X.1.6, X.1.10,
	// Outlook/EOP 5.4.1 "recipient address rejected", "user unknown" …).
	Hard Class = "hard"
	// Disabled: the account exists but is disabled (X.2.1).
	Disabled Class = "disabled"
	// Transient: mailbox full (X.2.2), X.3.x but X.3.4, X.4.x, X.5.x, any 4.x.x.
	Transient Class = "transient"
	// Message: something about this message, not the recipient (X.2.3,
	// X.3.4 too big, X.6.x content); never suppress.
	Message Class = "message"
	// Policy: our configuration or reputation (X.7.x, DMARC 5.7.26, PTR
	// 5.7.25, 5.7.515, 4.7.x throttling); never suppress the recipient.
	Policy Class = "policy"
	// Undetermined: no usable code and no text rule matched.
	Undetermined Class = "undetermined"
)

// Suppresses reports whether a class can ever lead to suppressing the
// recipient (Hard, Disabled, Transient, Undetermined).
func (c Class) Suppresses() bool {
	switch c {
	case Hard, Disabled, Transient, Undetermined:
		return true
	}
	return false
}

// Classify classifies one SMTP reply or DSN status. code is the basic reply
// code (550; 0 when unknown), enhanced the RFC 3463 code ("5.1.1", possibly
// "" or with a trailing comment like "5.0.0 (permanent failure)"), text the
// reply text or Diagnostic-Code.
//
// The enhanced code's subject and detail decide; when it is missing or
// X.0.0 an enhanced code found inside text is used; then the text rules.
// 5.7.0, 5.7.1, X.0.0, X.5.0 and codes without detail give way to a text
// that clearly says the mailbox does not exist, is disabled or is full, but
// never when the text also names a policy reason (blocklists, reputation,
// DMARC, SPF, …): a policy block is never turned into a hard bounce. A 4xx
// reply is never Hard or Disabled: it is Transient, or Policy for 4.7.x and
// policy texts. A 2xx reply (or 2.x.x status) is not a failure: "".
func Classify(code int, enhanced, text string) Class {
	if code/100 == 2 {
		return ""
	}
	e, ok := parseEnhanced(enhanced)
	if code == 0 && ok && e.class == 2 {
		return ""
	}
	if !ok || e.generic() {
		if t, tok := findEnhanced(text); tok && t.class != 2 && (!ok || !t.generic()) {
			e, ok = t, true
		}
	}
	if code == 0 {
		if code = findBasic(text); code/100 == 2 {
			code = 0
		}
	}
	temporary := code/100 == 4 || (code/100 != 5 && ok && e.class == 4)
	tc, matched := textClass(text)
	var c Class
	switch {
	case ok && !e.generic():
		c = byEnhanced(e, text, tc, matched)
	case matched:
		c = tc
	default:
		c = Undetermined
	}
	if temporary {
		if (ok && e.subject == 7) || c == Policy {
			return Policy
		}
		return Transient
	}
	return c
}

// byEnhanced classifies by the code's subject and detail; text classes
// (tc, when matched) refine the codes that are known to be used loosely.
func byEnhanced(e enhancedCode, text string, tc Class, matched bool) Class {
	orText := func(def Class) Class {
		if matched {
			return tc
		}
		return def
	}
	switch e.subject {
	case 1:
		switch e.detail {
		case 1, 2, 3, 6, 10:
			return Hard
		case 7, 8:
			return Policy // the sender's address (ours) was refused
		case 0:
			return orText(Undetermined)
		}
		return orText(Undetermined)
	case 2:
		switch e.detail {
		case 1:
			return Disabled
		case 2:
			return Transient
		case 3:
			return Message
		case 0:
			return orText(Transient)
		}
		return Transient
	case 3:
		if e.detail == 4 {
			return Message
		}
		return orText(Transient)
	case 4:
		if e.detail == 1 && e.class == 5 && recipientRejected(text) {
			return Hard // Outlook/EOP: 550 5.4.1 Recipient address rejected
		}
		return Transient
	case 5:
		if e.detail == 0 {
			return orText(Transient)
		}
		return Transient
	case 6:
		return Message
	case 7:
		if (e.detail == 0 || e.detail == 1) && matched && tc != Policy && tc != Message {
			if c := strongClass(text); c != "" {
				return c
			}
		}
		return Policy
	}
	return orText(Undetermined)
}

// recipientRejected reports whether a 5.4.1 text is EOP's unknown
// recipient ("Recipient address rejected: Access denied") or another clear
// unknown-recipient text.
func recipientRejected(text string) bool {
	l := strings.ToLower(text)
	return strings.Contains(l, "recipient address rejected") || strongClass(text) == Hard
}
