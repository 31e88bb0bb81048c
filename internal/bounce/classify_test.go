package bounce

import "testing"

func TestClassify(t *testing.T) {
	tests := []struct {
		name     string
		code     int
		enhanced string
		text     string
		want     Class
	}{
		// Codes decide.
		{"user unknown", 550, "5.1.1", "550 5.1.1 <x@example.com>: Recipient address rejected: User unknown", Hard},
		{"bad domain", 550, "5.1.2", "Host unknown", Hard},
		{"bad syntax", 501, "5.1.3", "Bad recipient address syntax", Hard},
		{"has moved", 551, "5.1.6", "User has moved", Hard},
		{"null MX", 550, "5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNullMX; Recipient domain has null MX", Hard},
		{"sender rejected", 501, "5.1.8", "501 5.1.8 Sender address rejected", Policy},
		{"5.1.0 with unknown text", 550, "5.1.0", "550 5.1.0 Address rejected", Hard},
		{"5.1.0 no text", 550, "5.1.0", "", Undetermined},
		{"disabled", 550, "5.2.1", "550-5.2.1 The email account that you tried to reach is disabled.", Disabled},
		{"disabled even if text says unknown", 550, "5.2.1", "User Unknown", Disabled},
		{"mailbox full", 552, "5.2.2", "552 5.2.2 Mailbox full", Transient},
		{"mailbox full 4xx", 452, "4.2.2", "452 4.2.2 The email account that you tried to reach is over quota", Transient},
		{"message too big (2.3)", 552, "5.2.3", "Message size exceeds fixed maximum message size", Message},
		{"message too big (3.4)", 552, "5.3.4", "552 5.3.4 Message too big", Message},
		{"system not accepting", 554, "5.3.2", "System not accepting network messages", Transient},
		{"EOP 5.4.1 unknown recipient", 550, "5.4.1", "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)", Hard},
		{"5.4.1 no answer from host", 550, "5.4.1", "No answer from host", Transient},
		{"4.4.1 timed out", 451, "4.4.1", "4.4.1 connection timed out", Transient},
		{"4.4.1 without basic code", 0, "4.4.1", "connection timed out", Transient},
		{"5.4.4 unable to route", 554, "5.4.4", "Unable to route", Transient},
		{"too many recipients", 452, "4.5.3", "Too many recipients", Transient},
		{"5.5.0 unknown user (qmail)", 550, "5.5.0", "550 Unknown user kijitora@example.ne.jp (#5.5.0)", Hard},
		{"5.6.0 content", 554, "5.6.0", "554 5.6.0 Message content rejected", Message},
		{"spamhaus 5.7.1", 550, "5.7.1", "Service unavailable, Client host [192.0.2.1] blocked using Spamhaus", Policy},
		{"5.7.1 user unknown", 550, "5.7.1", "<x@example.com>: Recipient address rejected: User unknown", Hard},
		{"5.7.1 no such user", 550, "5.7.1", "550 5.7.1 No such user here", Hard},
		{"5.7.1 access denied", 554, "5.7.1", "554 5.7.1 <x@example.ch>: Recipient address rejected: Access denied", Policy},
		{"5.7.1 gmail reputation", 550, "5.7.1", "550-5.7.1 Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam", Policy},
		{"5.7.1 unknown user but blocked", 550, "5.7.1", "User unknown or blocked by policy", Policy},
		{"DMARC", 550, "5.7.26", "550-5.7.26 Unauthenticated email from example.gob.pe is not accepted due to domain's DMARC policy", Policy},
		{"DMARC even with unknown text", 550, "5.7.26", "mailbox does not exist", Policy},
		{"PTR", 550, "5.7.25", "550-5.7.25 The IP address sending this message does not have a PTR record setup", Policy},
		{"Outlook 5.7.515", 550, "5.7.515", "550 5.7.515 Access denied, sending domain example.gob.pe doesn't meet the required authentication level", Policy},
		{"Yahoo 5.7.9", 554, "5.7.9", "554 5.7.9 Message not accepted for policy reasons", Policy},
		{"4.7.0 try again later", 421, "4.7.0", "421 4.7.0 Try again later, closing connection", Policy},
		{"Gmail 4.7.28 in text only", 421, "", "421-4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address", Policy},
		{"4xx user unknown is never hard", 450, "4.1.1", "450 4.1.1 <x@example.com>: Recipient address rejected: User unknown in local recipient table", Transient},
		{"4xx disabled is never disabled", 450, "4.2.1", "450 4.2.1 account disabled", Transient},
		{"4xx without enhanced, unknown text", 450, "", "Requested mail action not taken: mailbox unavailable", Transient},
		{"4xx policy text", 421, "", "421 Too many connections from your IP (rate limit)", Policy},
		// No enhanced code: text rules.
		{"550 no such user", 550, "", "No such user here", Hard},
		{"550 blocked", 550, "", "Your IP has been blocked", Policy},
		{"550 mailbox unavailable", 550, "", "Requested action not taken: mailbox unavailable", Hard},
		{"550 account deactivated", 550, "", "This account has been deactivated", Disabled},
		{"552 over quota", 552, "", "Recipient is over quota", Transient},
		{"552 message too large", 552, "", "Message too large for this system", Message},
		{"554 nothing", 554, "", "", Undetermined},
		{"550 unreadable text", 550, "", "Requested action not taken", Undetermined},
		{"spanish user unknown", 550, "", "El usuario no existe", Hard},
		// X.0.0 and comments: the text and the codes inside it decide.
		{"5.0.0 with Gmail 5.1.1 inside", 0, "5.0.0 (permanent failure)", "smtp; 550-5.1.1 The email account that you tried to reach does not exist", Hard},
		{"5.0.0 with 5.2.2 inside", 0, "5.0.0", "smtp; 550 5.2.2 <x@example.jp>... Mailbox Full", Transient},
		{"5.0.0 SES 5.1.0 then 5.2.2", 0, "5.0.0", "5.1.0 - Unknown address error 550-'5.2.2 <x@example.jp>... Mailbox Full'", Transient},
		{"5.0.0 registered user", 550, "5.0.0", "550 'a@example.com' is not a registered gateway user", Hard},
		{"5.0.0 nothing", 0, "5.0.0", "", Undetermined},
		{"4.0.0 nothing", 0, "4.0.0", "", Transient},
		{"enhanced code in the text only", 0, "", "smtp; 550 5.1.1 <x@y>: Recipient address rejected", Hard},
		{"basic code in the text only", 0, "", "smtp; 421 Service not available, closing transmission channel", Transient},
		{"nothing at all", 0, "", "", Undetermined},
		// Not failures.
		{"250", 250, "", "250 2.0.0 OK", ""},
		{"2.0.0 status", 0, "2.0.0", "", ""},
		{"250 with failure-looking text", 250, "2.1.5", "Recipient ok", ""},
	}
	if len(tests) < 40 {
		t.Fatalf("only %d cases", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.code, tt.enhanced, tt.text); got != tt.want {
				t.Errorf("Classify(%d, %q, %q) = %q, want %q", tt.code, tt.enhanced, tt.text, got, tt.want)
			}
		})
	}
}

func TestSuppresses(t *testing.T) {
	tests := []struct {
		class Class
		want  bool
	}{
		{Hard, true}, {Disabled, true}, {Transient, true}, {Undetermined, true},
		{Message, false}, {Policy, false}, {"", false},
	}
	for _, tt := range tests {
		if got := tt.class.Suppresses(); got != tt.want {
			t.Errorf("%q.Suppresses() = %v, want %v", tt.class, got, tt.want)
		}
	}
}

// classes are the valid results of Classify.
var classes = map[Class]bool{Hard: true, Disabled: true, Transient: true, Message: true, Policy: true, Undetermined: true, "": true}

func FuzzClassify(f *testing.F) {
	f.Add(550, "5.1.1", "User unknown")
	f.Add(421, "4.7.0", "Try again later")
	f.Add(0, "5.0.0 (permanent failure)", "smtp; 550-5.1.1 The email account that you tried to reach does not exist")
	f.Add(450, "", "mailbox unavailable")
	f.Add(0, "", "550 5.7.1 blocked using Spamhaus")
	f.Fuzz(func(t *testing.T, code int, enhanced, text string) {
		c := Classify(code, enhanced, text)
		if !classes[c] {
			t.Fatalf("Classify(%d, %q, %q) = %q, not a class", code, enhanced, text, c)
		}
		if code/100 == 4 && (c == Hard || c == Disabled) {
			t.Fatalf("Classify(%d, %q, %q) = %q for a 4xx reply", code, enhanced, text, c)
		}
		if code/100 == 2 && c != "" {
			t.Fatalf("Classify(%d, %q, %q) = %q for a 2xx reply", code, enhanced, text, c)
		}
	})
}
