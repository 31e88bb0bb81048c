package bounce

import (
	"regexp"
	"strings"
)

// A bounceMarker is the sentence with which one kind of MTA starts the
// list of failed (or delayed) recipients of a non-RFC 3464 bounce: one of
// its phrases (plain substrings of the lower-cased text) or its expression.
type bounceMarker struct {
	mta     string
	action  string // "failed" or "delayed"
	phrases []string
	re      *regexp.Regexp
}

// find returns the end of the first place where the marker occurs in the
// lower-cased text l, -1 if it does not.
func (mk *bounceMarker) find(l string) int {
	start, end := -1, -1
	for _, p := range mk.phrases {
		if i := strings.Index(l, p); i >= 0 && (start < 0 || i < start) {
			start, end = i, i+len(p)
		}
	}
	if mk.re != nil {
		if loc := mk.re.FindStringIndex(l); loc != nil && (start < 0 || loc[0] < start) {
			end = loc[1]
		}
	}
	return end
}

// bounceMarkers are tried in order; delay warnings come before the
// failure texts of the same MTA.
var bounceMarkers = []bounceMarker{
	{mta: "exim", action: "delayed", phrases: []string{"has not yet been delivered to one or more of its"}},
	{mta: "gmail", action: "delayed", phrases: []string{"delivery to the following recipient has been delayed", "delivery to the following recipients has been delayed"}},
	{mta: "sendmail", action: "delayed", phrases: []string{"the following addresses had transient non-fatal errors", "warning: could not send message for past"}},
	{mta: "postfix", action: "delayed", phrases: []string{"delayed mail (still being retried)", "this is a warning message only"}},
	{mta: "qmail", action: "failed", phrases: []string{"this is the qmail-send program", "i'm afraid i wasn't able to deliver your message"}},
	{mta: "exim", action: "failed", phrases: []string{"the following address(es) failed", "the following addresses failed", "the following address failed"}},
	{mta: "exim", action: "failed", phrases: []string{"this message was created automatically by mail delivery software"}},
	{mta: "gmail", action: "failed", phrases: []string{"delivery to the following recipient failed permanently", "delivery to the following recipients failed permanently"}},
	{mta: "yahoo", action: "failed", phrases: []string{"sorry, we were unable to deliver your message to the following address"}},
	{mta: "exchange", action: "failed", phrases: []string{
		"delivery has failed to these recipients or groups", "delivery has failed to these recipients or distribution lists",
		"your message did not reach some or all of the intended recipients", "did not reach the following recipient",
		"the following recipient(s) cannot be reached",
	}},
	{mta: "hotmail", action: "failed", phrases: []string{"delivery to the following recipients failed"}},
	{mta: "sendmail", action: "failed", phrases: []string{"the following addresses had permanent fatal errors"}},
	{mta: "postfix", action: "failed", phrases: []string{
		"i'm sorry to have to inform you that your message", "i'm sorry to have to inform you that the message returned",
		"i'm afraid i wasn't able to be delivered", "could not be delivered to one or more recipients",
		"could not be delivered to one or more destinations",
	}},
	{mta: "ses", action: "failed", re: regexp.MustCompile(`the following message to <[^>]+> was undeliverable`)},
}

// returnedRe finds the line after which a text bounce quotes the returned
// message (it ends the recipient list too).
var returnedRe = regexp.MustCompile(`(?mi)^[ \t]*(?:-+ ?(?:original message|below this line is a copy of the message|` +
	`this is a copy of the message|(?:the )?original message (?:follows|headers? follows)|unsent message follows|` +
	`message header follows|the header of the original message|returned message)|original message headers:)[^\n]*$`)

// Address lines in a recipient list: "<a@b>: text" (sendmail: "<a@b>...
// text"), a bare "a@b" (maybe
// "a@b on <date>" or quoted), "Name<mailto:a@b>".
var (
	angleLineRe  = regexp.MustCompile(`^\s*<([^\s<>@]+@[^\s<>]+)>(?::|\.\.\.)?(?:\s*(.*))?$`)
	bareLineRe   = regexp.MustCompile(`^\s*['"]?([^\s<>'":;,()\[\]]+@[^\s<>'":;,()\[\]]+?)['"]?(?:\s+on\s+.*|:)?\s*$`)
	mailtoLineRe = regexp.MustCompile(`^\s*[^<>]*<mailto:([^\s<>@]+@[^\s<>]+)>\s*$`)
	anyAddrRe    = regexp.MustCompile(`[A-Za-z0-9._%+\-=/!#$&'*?^{|}~]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}`)
)

// splitReturned cuts a text bounce where it starts quoting the returned
// message: the text before, and the quoted message (nil if none).
func splitReturned(text string) (string, []byte) {
	loc := returnedRe.FindStringIndex(text)
	if loc == nil {
		return text, nil
	}
	return text[:loc[0]], []byte(strings.TrimLeft(text[loc[1]:], "\n"))
}

// textBounce reads a non-RFC 3464 bounce from its human text (without the
// quoted returned message, see splitReturned): the
// recipients after a known MTA's marker, else (when the header looks like a
// bounce) any address line, X-Failed-Recipients, or an address next to an
// SMTP code. ok is false when nothing was found.
func textBounce(h header, text string, looksLikeBounce bool) ([]Recipient, bool) {
	if len(text) > maxBounceText {
		text = text[:maxBounceText]
	}
	lower := asciiLower(text[:min(len(text), maxMarkerScan)])
	action, section := "", ""
	for i := range bounceMarkers {
		if end := bounceMarkers[i].find(lower); end >= 0 {
			action, section = bounceMarkers[i].action, text[end:]
			break
		}
	}
	if action == "" {
		if !looksLikeBounce {
			return nil, false
		}
		action, section = "failed", text
		if delayRe.MatchString(lower) {
			action = "delayed"
		}
	}
	section = strings.TrimLeft(section, ": \t")
	own := ownAddresses(h)
	rs := addressLines(section, own)
	if len(rs) == 0 {
		for _, v := range h.all("x-failed-recipients") {
			for _, a := range strings.Split(v, ",") {
				if a = normAddr(a); a != "" && !own[strings.ToLower(a)] {
					rs = append(rs, textRecipient{addr: a, diag: []string{section}})
				}
			}
		}
	}
	if len(rs) == 0 {
		rs = addressNearCode(section, own)
	}
	var out []Recipient
	for _, t := range rs {
		out = append(out, t.recipient(action))
	}
	return out, len(out) > 0
}

// Bounds on the text a text bounce is read from: markers are looked for
// near the top, recipients in the first part, at most maxTextRecipients.
const (
	maxMarkerScan     = 64 << 10
	maxBounceText     = 256 << 10
	maxTextRecipients = 100
	maxDiagnostic     = 2000 // bytes of a text recipient's diagnostic
)

// delayRe marks a generic bounce-looking text as a delay warning.
var delayRe = regexp.MustCompile(`still (?:being )?(?:trying|retried)|will (?:continue to )?(?:retry|try)|not yet been delivered|delivery (?:is |has been )?delayed`)

// textRecipient is an address found in a text bounce with its lines.
type textRecipient struct {
	addr string
	diag []string
}

// recipient turns t into a Recipient with the codes of its text.
func (t textRecipient) recipient(action string) Recipient {
	d := strings.Join(strings.Fields(strings.Join(t.diag, " ")), " ")
	if len(d) > maxDiagnostic {
		d = strings.ToValidUTF8(d[:maxDiagnostic], "")
	}
	rc := Recipient{Final: t.addr, Action: action, Diagnostic: d, Code: findBasic(d)}
	if e, ok := findEnhanced(d); ok {
		rc.Status = e.String()
	}
	rc.Class = Classify(rc.Code, rc.Status, d)
	if rc.Class == "" {
		rc.Class = Undetermined
	}
	return rc
}

// addressLines reads a recipient list: each address line starts a
// recipient, the lines after it (up to the next address line) are its
// diagnostic. The same address twice is one recipient.
func addressLines(section string, own map[string]bool) []textRecipient {
	var rs []textRecipient
	idx := map[string]int{}
	cur := -1
	for n, line := range strings.Split(section, "\n") {
		if n > 2000 {
			break
		}
		addr, rest := addressLine(line)
		if addr != "" && !own[strings.ToLower(addr)] {
			key := strings.ToLower(addr)
			i, seen := idx[key]
			if !seen && len(rs) == maxTextRecipients {
				break
			}
			if !seen {
				i = len(rs)
				idx[key] = i
				rs = append(rs, textRecipient{addr: addr})
			}
			cur = i
			if rest != "" {
				rs[cur].diag = append(rs[cur].diag, rest)
			}
			continue
		}
		if cur >= 0 && len(rs[cur].diag) < 60 {
			rs[cur].diag = append(rs[cur].diag, strings.TrimSpace(line))
		}
	}
	return rs
}

// addressLine returns the address a recipient-list line starts with and
// the text after it, "" when the line is no address line.
func addressLine(line string) (addr, rest string) {
	if len(line) > 400 || !strings.Contains(line, "@") {
		return "", ""
	}
	if m := angleLineRe.FindStringSubmatch(line); m != nil {
		return normAddr(m[1]), strings.TrimSpace(m[2])
	}
	if m := mailtoLineRe.FindStringSubmatch(line); m != nil {
		return normAddr(m[1]), ""
	}
	if m := bareLineRe.FindStringSubmatch(line); m != nil {
		return normAddr(m[1]), ""
	}
	return "", ""
}

// addressNearCode finds, as a last resort, the first address on or just
// above a line holding an SMTP reply code.
func addressNearCode(section string, own map[string]bool) []textRecipient {
	lines := strings.Split(section, "\n")
	for i, line := range lines {
		if i > 2000 {
			break
		}
		if findBasic(line) == 0 {
			continue
		}
		for _, cand := range []string{line, prevLine(lines, i)} {
			for _, a := range anyAddrRe.FindAllString(cand, 4) {
				if a = normAddr(a); !own[strings.ToLower(a)] {
					return []textRecipient{{addr: a, diag: []string{line}}}
				}
			}
		}
	}
	return nil
}

// prevLine is the line before lines[i], "" for the first.
func prevLine(lines []string, i int) string {
	if i == 0 {
		return ""
	}
	return lines[i-1]
}

// ownAddresses are the bounce's own From, To, Return-Path and Sender
// addresses (the reporting system and us), never a failed recipient.
func ownAddresses(h header) map[string]bool {
	own := map[string]bool{}
	for _, name := range []string{"from", "to", "sender", "return-path", "reply-to", "delivered-to", "x-original-to"} {
		for _, v := range h.all(name) {
			for _, a := range anyAddrRe.FindAllString(v, 8) {
				own[strings.ToLower(normAddr(a))] = true
			}
		}
	}
	return own
}
