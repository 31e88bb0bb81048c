package bounce

import "testing"

// report builds a multipart/report of type typ with one part of ctype.
func report(typ, ctype, body string) string {
	return "From: postmaster@mx.example.org\nSubject: Report\n" +
		"Content-Type: multipart/report; report-type=" + typ + "; boundary=b\n\n" +
		"--b\nContent-Type: text/plain\n\nA report.\n" +
		"--b\nContent-Type: " + ctype + "\n\n" + body + "--b--\n"
}

func TestReadKinds(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want Kind
	}{
		{"delivered only", report("delivery-status", "message/delivery-status",
			"Reporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; a@example.org\nAction: delivered\nStatus: 2.0.0\n"), KindFeedback},
		{"relayed and expanded", report("delivery-status", "message/delivery-status",
			"Final-Recipient: rfc822; a@example.org\nAction: relayed\nStatus: 2.0.0\n\n"+
				"Final-Recipient: rfc822; b@example.org\nAction: expanded\nStatus: 2.0.0\n"), KindFeedback},
		{"one failed among delivered", report("delivery-status", "message/delivery-status",
			"Final-Recipient: rfc822; a@example.org\nAction: delivered\nStatus: 2.0.0\n\n"+
				"Final-Recipient: rfc822; b@example.org\nAction: failed\nStatus: 5.1.1\n"), KindDSN},
		{"action missing, 5.x.x", report("delivery-status", "message/delivery-status",
			"Final-Recipient: rfc822; a@example.org\nStatus: 5.1.1\n"), KindDSN},
		{"not-spam", report("feedback-report", "message/feedback-report",
			"Feedback-Type: not-spam\nUser-Agent: x/1\nVersion: 1\n"), KindFeedback},
		{"fraud", report("feedback-report", "message/feedback-report",
			"Feedback-Type: fraud\nUser-Agent: x/1\nVersion: 1\n"), KindComplaint},
		{"feedback type missing", report("feedback-report", "message/feedback-report",
			"User-Agent: x/1\nVersion: 1\n"), KindComplaint},
		{"feedback report in a mixed message", "From: fbl@example.org\nContent-Type: multipart/mixed; boundary=b\n\n" +
			"--b\nContent-Type: message/feedback-report\n\nFeedback-Type: virus\n--b--\n", KindComplaint},
		{"X-Autoreply", "From: ana@example.org\nX-Autoreply: yes\nSubject: Re: aviso\n\nNo mailbox check today.", KindAutoReply},
		{"Precedence auto_reply", "From: ana@example.org\nPrecedence: auto_reply\nSubject: Re: aviso\n\nhola", KindAutoReply},
		{"Spanish subject", "From: ana@example.org\nSubject: Respuesta automática: aviso\n\nEstoy fuera.", KindAutoReply},
		{"Fuera de la oficina", "From: ana@example.org\nSubject: =?utf-8?q?Fuera_de_la_oficina?=\n\nVuelvo el lunes.", KindAutoReply},
		{"vacation with mailbox words", "From: ana@example.org\nAuto-Submitted: auto-replied\nSubject: Re: x\n\n" +
			"My mailbox is full of work, user unknown jokes aside, I am away.", KindAutoReply},
		{"auto-generated without report", "From: notify@example.org\nAuto-Submitted: auto-generated\nSubject: Your ticket\n\nTicket 12 closed.", KindAutoReply},
		{"Auto-Submitted: no", "From: ana@example.org\nAuto-Submitted: no\nSubject: hola\n\nhola", KindUnknown},
		{"human reply", "From: ana@example.org\nSubject: Re: aviso\n\nGracias, recibido.", KindUnknown},
		{"bounce subject, nothing readable", "From: postmaster@example.org\nSubject: Undeliverable: aviso\n\n(no text)", KindDSN},
		{"generic fallback", "From: MAILER-DAEMON@example.org\nSubject: Mail delivery failed\n\n" +
			"Could not deliver to jose@example.org\n550 5.1.1 jose@example.org: no such user\n", KindDSN},
		{"sendmail delay warning", "From: MAILER-DAEMON@example.org\nSubject: Warning: could not send message for past 4 hours\n\n" +
			"    **********************************************\n    **      THIS IS A WARNING MESSAGE ONLY      **\n\n" +
			"The original message was received at Mon, 2 Mar 2026 10:00:00 -0500\n\n" +
			"   ----- Transcript of session follows -----\n<luz@example.org>... Deferred: Connection timed out\n", KindDelayed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Read([]byte(tt.raw))
			if err != nil {
				t.Fatal(err)
			}
			if r.Kind != tt.want {
				t.Errorf("Kind = %q, want %q (recipients %+v)", r.Kind, tt.want, r.Recipients)
			}
			checkInvariants(t, r)
		})
	}
}
