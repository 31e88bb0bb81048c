package bounce

import (
	"regexp"
	"strings"
)

// A textRule says what a reply text means when it matches: when the
// lower-cased text contains one of its phrases or matches one of its
// expressions. strong rules name the recipient's mailbox itself (it does
// not exist, is disabled or is full): only they may override a 5.7.0/5.7.1
// code. Phrases are plain substrings: a table of them costs a fraction of
// one large regular expression.
type textRule struct {
	class   Class
	strong  bool
	phrases []string
	res     []*regexp.Regexp
}

// matches reports whether the lower-cased text l matches r.
func (r *textRule) matches(l string) bool {
	for _, p := range r.phrases {
		if strings.Contains(l, p) {
			return true
		}
	}
	for _, re := range r.res {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}

// textRules are tried in order; the first match wins. Policy comes first so
// that a text naming a policy reason is never read as an unknown user
// (Postal #60: a Gmail 5.7.1 reputation block suppressed real recipients).
var textRules = []textRule{
	{class: Policy, phrases: []string{
		"spamhaus", "spamcop", "sorbs", "barracuda", "abuseat", "dnsbl", "blacklist", "black list",
		"blocklist", "block list", "denylist", "deny list", "blocked", "blocking", "reputation", "dmarc",
		"reverse dns", "reverse lookup", "5.7.515", "5.7.25", "5.7.26", "authenticat", "access denied",
		"policy", "policies", "spam", "unsolicited", "rate limit", "unusual rate", "throttl",
		"too many messages", "too many connections", "too many emails", "not permitted to relay",
		"relay access denied", "relaying denied", "relay not permitted", "relaying not allowed",
		"sender address rejected", "valid from", "your isp", "dynamic ip", "client host", "banned",
		"not authorized", "not authorised",
	}, res: []*regexp.Regexp{
		regexp.MustCompile(`\b(?:rbl|ptr|spf|dkim|rdns|block)\b`),
		regexp.MustCompile(`sender (?:domain|address) (?:is )?(?:invalid|not|unknown|rejected)`),
		regexp.MustCompile(`(?:ip|host) (?:address )?(?:is )?listed`),
	}},
	{class: Disabled, strong: true, phrases: []string{
		"disabled account", "deactivated account", "suspended account", "inactive account",
		"disabled mailbox", "inactive mailbox", "disabled user", "inactive user",
		"cuenta desactivada", "cuenta deshabilitada", "cuenta suspendida",
	}, res: []*regexp.Regexp{
		regexp.MustCompile(`(?:account|mailbox|user)\b[^.;]{0,40}\b(?:disabled|deactivated|suspended|inactive|locked|frozen)`),
	}},
	{class: Message, phrases: []string{
		"message size exceeds", "size exceeded", "size limit exceeded", "message length exceeds",
		"virus", "malware", "content rejected",
	}, res: []*regexp.Regexp{
		regexp.MustCompile(`message (?:size )?(?:is )?too (?:big|large)`),
		regexp.MustCompile(`exceeds (?:the )?(?:fixed )?max(?:imum)? (?:allowed )?(?:message )?size`),
	}},
	{class: Transient, strong: true, phrases: []string{
		"mailbox full", "mailbox is full", "mailbox was full", "mail box full", "over quota", "overquota",
		"quota exceeded", "quota full", "insufficient storage", "insufficient system storage",
		"mailfolder is full", "buzón lleno", "buzon lleno",
	}, res: []*regexp.Regexp{
		regexp.MustCompile(`exceeded (?:the |their |its )?(?:storage |mailbox )?(?:quota|storage)`),
		regexp.MustCompile(`(?:mailbox|storage|disk) (?:size )?(?:limit )?(?:is |has been )?exceeded`),
	}},
	{class: Hard, strong: true, phrases: []string{
		"user unknown", "unknown user", "no such user", "no such mailbox", "no such recipient",
		"no such address", "no such account", "no such person", "no such local user", "does not exist",
		"doesn't exist", "doesnt exist", "did not exist", "unknown recipient", "recipient unknown",
		"invalid recipient", "invalid mailbox", "invalid user", "invalid address", "no mailbox",
		"mailbox unavailable", "mailbox not found", "mailbox name not allowed", "recipient not found",
		"recipient address not found", "recipient rejected", "address rejected", "user not found",
		"address not found", "address couldn't be found", "address could not be found",
		"recipient name is not recognized", "recipnotfound", "recipientnotfound",
		"email address was not found", "e-mail address was not found", "no longer valid",
		"no longer available", "has moved", "unrouteable address", "host unknown", "unknown host",
		"host not found", "domain not found", "no such domain", "domain is not reachable",
		"domain not reachable", "null mx", "does not accept mail", "account that you tried to reach",
		"no existe", "usuario desconocido",
	}, res: []*regexp.Regexp{
		regexp.MustCompile(`not a (?:valid|registered|known)\b[^.;]{0,30}(?:user|recipient|mailbox|address)`),
	}},
	{class: Transient, phrases: []string{
		"timed out", "time out", "timeout", "connection refused", "connection reset", "connection closed",
		"connection lost", "connection dropped", "could not connect", "did not accept our requests to connect",
		"socket error", "temporar", "try again later", "try later", "deferred", "network", "unreachable",
		"dns error", "dns failure", "lookup fail", "too many recipients", "too many hops", "mail loop",
		"service unavailable", "service is unavailable", "service temporarily unavailable",
		"insufficient resources", "system error", "system failure", "server busy", "expired", "giving up",
	}},
}

// textClass classifies a reply text by the first matching rule.
func textClass(text string) (Class, bool) {
	l := lowerScan(text)
	if l == "" {
		return "", false
	}
	for i := range textRules {
		if textRules[i].matches(l) {
			return textRules[i].class, true
		}
	}
	return "", false
}

// strongClass is the class of the first strong rule matching text (the
// mailbox does not exist, is disabled or is full), "" if none does.
func strongClass(text string) Class {
	l := lowerScan(text)
	for i := range textRules {
		if textRules[i].strong && textRules[i].matches(l) {
			return textRules[i].class
		}
	}
	return ""
}

// lowerScan lower-cases at most maxScan bytes of text for the text rules.
func lowerScan(text string) string {
	if len(text) > maxScan {
		text = text[:maxScan]
	}
	return asciiLower(text)
}

// asciiLower lower-cases the ASCII letters of s and nothing else, so that
// byte offsets in the result are offsets in s (strings.ToLower would turn
// an invalid byte into a three-byte U+FFFD).
func asciiLower(s string) string {
	i := 0
	for i < len(s) && (s[i] < 'A' || s[i] > 'Z') {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if c := b[i]; c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
