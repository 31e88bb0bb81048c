package mailing_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/quota"
)

// The header of a small valid submitted message from avisos@servir.gob.pe.
const (
	hFrom    = "From: SERVIR <avisos@servir.gob.pe>\r\n"
	hTo      = "To: ana@example.com\r\n"
	hSubject = "Subject: Hola\r\n"
	hMsgID   = "Message-ID: <pedido-42.1@servir.gob.pe>\r\n"
	hDate    = "Date: Wed, 25 Nov 2026 10:00:00 -0500\r\n"
	body     = "\r\nCuerpo\r\n"
)

// submission is a message to ana@example.com from sjti/talento.
func submission(msg string) mailing.Submission {
	return mailing.Submission{Account: "sjti/talento", Recipients: []string{"ana@example.com"}, Message: []byte(msg)}
}

// storedRaw is the message as stored in mail_messages.raw.
func storedRaw(t *testing.T, e env, id string) []byte {
	t.Helper()
	var raw []byte
	if err := e.DB.NewRaw("SELECT raw FROM mail_messages WHERE id = ?", id).Scan(context.Background(), &raw); err != nil {
		t.Fatal(err)
	}
	return raw
}

// An accepted message is stored as submitted except for the submission
// server's changes (RFC 6409 §8) — Bcc and the X-Envios- directives
// removed, Message-ID and Date added when missing — and Render returns
// exactly what is stored.
func TestSubmitStoresTheMessageAsChanged(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 100}, mailing.Config{})
		ctx := context.Background()
		added := "Message-ID: <{id}@envios.servir.gob.pe>\r\nDate: " + start.Format(time.RFC1123Z) + "\r\n"
		multipart := "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n" +
			"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHola\r\n--b1\r\nContent-Type: text/html\r\n\r\n<p>Hola</p>\r\n--b1--\r\n"
		received := func(from string) string {
			return "Received: from " + from + "\r\n\tby relay.servir.gob.pe (envios) with ESMTPSA id {id}\r\n" +
				"\t(version=TLS1.3 cipher=TLS_AES_128_GCM_SHA256);\r\n\t" + start.UTC().Format(time.RFC1123Z) + "\r\n"
		}
		trace := func(helo, addr string) *mailing.Trace {
			t := &mailing.Trace{Helo: helo, By: "relay.servir.gob.pe", With: "ESMTPSA", TLS: "version=TLS1.3 cipher=TLS_AES_128_GCM_SHA256"}
			if addr != "" {
				t.Addr = netip.MustParseAddr(addr)
			}
			return t
		}
		tests := []struct {
			name     string
			in, want string // {id} in want: the receipt's message id
			trace    *mailing.Trace
		}{
			{"Message-ID and Date added", hFrom + hTo + hSubject + body, hFrom + hTo + hSubject + added + body, nil},
			{"Message-ID and Date kept", hFrom + hTo + hSubject + hMsgID + hDate + body, hFrom + hTo + hSubject + hMsgID + hDate + body, nil},
			{"field names in any case", "from: avisos@servir.gob.pe\r\nmessage-id: <x.1@servir.gob.pe>\r\nDATE: " + start.Format(time.RFC1123Z) + "\r\n" + body,
				"from: avisos@servir.gob.pe\r\nmessage-id: <x.1@servir.gob.pe>\r\nDATE: " + start.Format(time.RFC1123Z) + "\r\n" + body, nil},
			{"Bcc removed", hFrom + "Bcc: oculto@example.org\r\n" + hTo + hSubject + hMsgID + hDate + body,
				hFrom + hTo + hSubject + hMsgID + hDate + body, nil},
			{"folded Bcc removed", hFrom + hTo + "bcc: uno@example.org,\r\n\tdos@example.org\r\n" + hSubject + "BCC:\r\n tres@example.org\r\n" + hMsgID + hDate + body,
				hFrom + hTo + hSubject + hMsgID + hDate + body, nil},
			{"directives removed", hFrom + "X-Envios-Campaign: invitaciones\r\n" + hTo + "x-envios-tags: cursos,\r\n 2027\r\n" + hSubject +
				"X-ENVIOS-PRIORITY: bulk\r\nX-Envios-Idempotency-Key: k-1\r\nX-Envios-Send-At: 2026-01-01T00:00:00Z\r\n" + hMsgID + hDate + body,
				hFrom + hTo + hSubject + hMsgID + hDate + body, nil},
			{"Return-Path and Content-Length removed", "Return-Path: <otro@example.org>\r\n" + hFrom + hTo + "content-length: 7\r\n" + hSubject + hMsgID + hDate + body,
				hFrom + hTo + hSubject + hMsgID + hDate + body, nil},
			{"folding and spacing kept", hFrom + hTo + "Subject: Hola\r\n  mundo \r\nX-Ref:a\r\n" + hMsgID + hDate + body,
				hFrom + hTo + "Subject: Hola\r\n  mundo \r\nX-Ref:a\r\n" + hMsgID + hDate + body, nil},
			{"header only", hFrom + hTo + hSubject, hFrom + hTo + hSubject + added, nil},
			{"empty body", hFrom + hTo + hSubject + "\r\n", hFrom + hTo + hSubject + added + "\r\n", nil},
			{"multipart kept", hFrom + hTo + hSubject + hMsgID + hDate + multipart, hFrom + hTo + hSubject + hMsgID + hDate + multipart, nil},
			// On PostgreSQL the bytes travel by binary COPY: every byte value
			// (8BITMIME, and octets that are not UTF-8) comes back as sent.
			{"8-bit body kept byte for byte", hFrom + hTo + hSubject + hMsgID + hDate + "\r\nA\xf1o \xc3\xb1and\xc3\xba \x80\xfe\xff\x01\x7f\r\n",
				hFrom + hTo + hSubject + hMsgID + hDate + "\r\nA\xf1o \xc3\xb1and\xc3\xba \x80\xfe\xff\x01\x7f\r\n", nil},
			// RFC 5321 §4.4: the trace field goes on top, above what the client wrote.
			{"Received on top", "Received: from elsewhere\r\n" + hFrom + hTo + hSubject + hMsgID + hDate + body,
				received("app01.servir.local ([10.0.0.7])") + "Received: from elsewhere\r\n" + hFrom + hTo + hSubject + hMsgID + hDate + body,
				trace("app01.servir.local", "10.0.0.7")},
			{"Received with an IPv6 client", hFrom + hTo + hSubject + hMsgID + hDate + body,
				received("app01 ([IPv6:2001:db8::7])") + hFrom + hTo + hSubject + hMsgID + hDate + body, trace("app01", "2001:db8::7")},
			{"Received with a mapped IPv4 client", hFrom + hTo + hSubject + hMsgID + hDate + body,
				received("app01 ([10.0.0.7])") + hFrom + hTo + hSubject + hMsgID + hDate + body, trace("app01", "::ffff:10.0.0.7")},
			{"Received without the client's address", hFrom + hTo + hSubject + hMsgID + hDate + body,
				received("app01") + hFrom + hTo + hSubject + hMsgID + hDate + body, trace("app01", "")},
			{"Received with a hostile EHLO name", hFrom + hTo + hSubject + hMsgID + hDate + body,
				received("x_by_evil__id_1__a_ ([10.0.0.7])") + hFrom + hTo + hSubject + hMsgID + hDate + body,
				trace("x by evil; id 1 (a)\t", "10.0.0.7")},
			{"Received with no EHLO name, before an added Message-ID", hFrom + hTo + hSubject + body,
				received("unknown ([10.0.0.7])") + hFrom + hTo + hSubject + added + body, trace("", "10.0.0.7")},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				in := []byte(tt.in)
				s := submission(tt.in)
				s.Message = in
				s.Trace = tt.trace
				r, err := e.M.Submit(ctx, s)
				if err != nil {
					t.Fatal(err)
				}
				if tt.in != string(in) {
					t.Fatal("Submit changed the caller's bytes")
				}
				if r.Recipients != 1 || r.Status != mailing.StatusQueued || r.Duplicate {
					t.Fatalf("receipt %+v", r)
				}
				want := strings.ReplaceAll(tt.want, "{id}", r.MessageID)
				raw := storedRaw(t, e, r.MessageID)
				if string(raw) != want {
					t.Fatalf("stored\n%q\nwant\n%q", raw, want)
				}
				rs, err := e.M.Recipients(ctx, "", r.MessageID, -1, 0)
				if err != nil || len(rs) != 1 {
					t.Fatalf("recipients %+v %v", rs, err)
				}
				rendered, err := e.M.Render(ctx, rs[0].ID)
				if err != nil || !bytes.Equal(rendered, raw) {
					t.Fatalf("Render = %q, %v; want the stored bytes", rendered, err)
				}
				// Recipients share the Message-ID the message carries.
				wantID := strings.ReplaceAll("{id}@envios.servir.gob.pe", "{id}", r.MessageID)
				if i := strings.Index(strings.ToLower(want), "message-id: <"); i >= 0 {
					wantID = want[i+len("message-id: <") : i+strings.IndexByte(want[i:], '>')]
				}
				if rs[0].RFCMessageID != wantID {
					t.Fatalf("recipient's Message-ID %q, want %q", rs[0].RFCMessageID, wantID)
				}
			})
		}
		if u := e.Used(t, "sjti/talento"); u != int64(len(tests)) {
			t.Fatalf("used %d, want %d", u, len(tests))
		}
		verify(t, e.M)
	})
}

// The envelope says who gets the message; the header says how each is
// recorded: named in To (which wins over Cc), in Cc, or else bcc.
func TestSubmitRecipientKinds(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 100}, mailing.Config{})
		ctx := context.Background()
		msg := hFrom + "To: Ana <ana@example.com>, luis@example.com\r\nCc: eva@example.com,\r\n LUIS@example.com\r\n" +
			"Bcc: oculto@example.org\r\nTo: \"Pérez, Raúl\" <raul@example.com>\r\nCc: not a list <<\r\n" + hSubject + body
		s := submission(msg)
		s.Recipients = []string{"ana@example.com", "Luis@EXAMPLE.com", "eva@example.com", "oculto@example.org", "ANA@example.com",
			"otro@example.net", "raul@example.com"}
		r, err := e.M.Submit(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if r.Recipients != 6 {
			t.Fatalf("receipt %+v: the duplicate ANA@ must be folded", r)
		}
		rs, err := e.M.Recipients(ctx, "", r.MessageID, -1, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, x := range rs {
			got[strings.ToLower(x.Address)] = x.Kind
		}
		want := map[string]string{"ana@example.com": "to", "luis@example.com": "to", "eva@example.com": "cc",
			"oculto@example.org": "bcc", "otro@example.net": "bcc", "raul@example.com": "to"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("kinds %v, want %v", got, want)
		}
		raw := storedRaw(t, e, r.MessageID)
		for _, x := range rs {
			b, err := e.M.Render(ctx, x.ID)
			if err != nil || !bytes.Equal(b, raw) {
				t.Fatalf("%s is not sent the stored message: %v", x.Address, err)
			}
		}
		if bytes.Contains(raw, []byte("oculto")) {
			t.Fatalf("a Bcc recipient appears in the message:\n%s", raw)
		}
		if u := e.Used(t, "sjti/talento"); u != 6 {
			t.Fatalf("used %d, want 6", u)
		}
		verify(t, e.M)
	})
}

// The X-Envios- directives do what the Message fields of the same names do.
func TestSubmitDirectives(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{})
		e.Clock.Add(123456 * time.Microsecond) // stored to the microsecond on both engines
		ctx := context.Background()
		tests := []struct {
			name    string
			fields  string
			status  mailing.Status
			check   func(mailing.MessageInfo) bool
			subject string
		}{
			{"none", "", mailing.StatusQueued, func(i mailing.MessageInfo) bool {
				return i.Priority == mailing.Transactional && i.Campaign == "" && len(i.Tags) == 0 && i.SendAt.IsZero() &&
					i.AcceptedAt.Equal(start.Add(123456*time.Microsecond))
			}, "Hola"},
			{"send-at in the future", "X-Envios-Send-At: 2026-11-27T09:00:00-05:00\r\n", mailing.StatusScheduled, func(i mailing.MessageInfo) bool {
				return i.SendAt.Equal(time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC))
			}, "Hola"},
			{"send-at in the past", "X-Envios-Send-At: 2026-11-01T09:00:00Z\r\n", mailing.StatusQueued, func(i mailing.MessageInfo) bool { return true }, "Hola"},
			{"priority bulk", "X-Envios-Priority: BULK\r\n", mailing.StatusQueued, func(i mailing.MessageInfo) bool { return i.Priority == mailing.Bulk }, "Hola"},
			{"priority transactional", "x-envios-priority: transactional\r\n", mailing.StatusQueued, func(i mailing.MessageInfo) bool {
				return i.Priority == mailing.Transactional
			}, "Hola"},
			{"campaign and tags", "X-Envios-Campaign: invitaciones-2027\r\nX-Envios-Tags: cursos,\r\n 2027\r\n", mailing.StatusQueued,
				func(i mailing.MessageInfo) bool {
					return i.Campaign == "invitaciones-2027" && strings.Join(i.Tags, ",") == "2027,cursos"
				}, "Hola"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := submission(hFrom + tt.fields + hTo + "Subject: =?utf-8?q?Hola?=\r\n" + body)
				s.Account = "enap/eventos"
				r, err := e.M.Submit(ctx, s)
				if err != nil || r.Status != tt.status {
					t.Fatalf("receipt %+v %v, want status %s", r, err, tt.status)
				}
				info, err := e.M.Message(ctx, "enap/eventos", r.MessageID)
				if err != nil {
					t.Fatal(err)
				}
				if !tt.check(info) || info.Counts[tt.status] != 1 || info.Subject != tt.subject || info.Origin != quota.OriginSMTP ||
					info.From != `"SERVIR" <avisos@servir.gob.pe>` || info.Kind != "single" {
					t.Fatalf("info %+v", info)
				}
				if raw := storedRaw(t, e, r.MessageID); bytes.Contains(bytes.ToLower(raw), []byte("x-envios")) {
					t.Fatalf("a directive was stored:\n%s", raw)
				}
			})
		}
		h, err := e.M.Ledger().History(ctx, quota.HistoryFilter{Kind: quota.KindCharge})
		if err != nil || len(h) != len(tests) || h[0].Origin != quota.OriginSMTP || h[0].Actor != "smtp" {
			t.Fatalf("charges %+v %v", h, err)
		}
		verify(t, e.M)
	})
}

// The same idempotency key twice: the first message, not a second one,
// whatever the second submission says.
func TestSubmitIdempotencyKey(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 100, "enap/eventos": 100}, mailing.Config{})
		ctx := context.Background()
		s := submission(hFrom + "X-Envios-Idempotency-Key: pedido-42/aviso\r\n" + hTo + hSubject + body)
		s.Actor = "smtp:app"
		first, err := e.M.Submit(ctx, s)
		if err != nil || first.Duplicate {
			t.Fatalf("first %+v %v", first, err)
		}
		again := submission(hFrom + "x-envios-idempotency-key: pedido-42/aviso\r\n" + hTo + "Subject: Otro\r\n" + body)
		again.Recipients = []string{"ana@example.com", "luis@example.com"}
		second, err := e.M.Submit(ctx, again)
		if err != nil || !second.Duplicate || second.MessageID != first.MessageID || second.Recipients != 1 {
			t.Fatalf("second %+v %v, want a duplicate of %+v", second, err, first)
		}
		if n := e.Count(t, "mail_messages"); n != 1 {
			t.Fatalf("%d messages stored", n)
		}
		if u := e.Used(t, "sjti/talento"); u != 1 {
			t.Fatalf("used %d, want 1", u)
		}
		h, _ := e.M.Ledger().History(ctx, quota.HistoryFilter{Kind: quota.KindCharge})
		if len(h) != 1 || h[0].Reference != first.MessageID || h[0].Actor != "smtp:app" {
			t.Fatalf("charges %+v", h)
		}
		// The same key for another account is another message.
		other := submission(string(s.Message))
		other.Account = "enap/eventos"
		r, err := e.M.Submit(ctx, other)
		if err != nil || r.Duplicate || r.MessageID == first.MessageID {
			t.Fatalf("other account %+v %v", r, err)
		}
		verify(t, e.M)
	})
}

// Every refusal matches its sentinel, names what is wrong, and stores and
// charges nothing.
func TestSubmitRefusesAndChargesNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 100}, mailing.Config{MaxRecipients: 3, MaxMessageSize: 2000})
		ctx := context.Background()
		ok := hFrom + hTo + hSubject
		tests := []struct {
			name  string
			msg   string
			rcpts []string // nil: ana@example.com
			want  error
			text  string
		}{
			{"two From", hFrom + ok + body, nil, mailing.ErrContent, "2 From fields"},
			{"no From", hTo + hSubject + body, nil, mailing.ErrContent, "no From field"},
			{"empty From", "From:\r\n" + hTo + body, nil, mailing.ErrContent, "From"},
			{"From with two addresses", "From: avisos@servir.gob.pe, otro@servir.gob.pe\r\n" + hTo + body, nil, mailing.ErrContent, "exactly one address"},
			{"From not allowed", "From: jefe@servir.gob.pe\r\n" + hTo + body, nil, mailing.ErrSenderNotAllowed, "may not send as jefe@servir.gob.pe"},
			{"From at another domain", "From: avisos@gmail.com\r\n" + hTo + body, nil, mailing.ErrSenderNotAllowed, "avisos@gmail.com"},
			{"Sender not allowed", ok + "Sender: jefe@servir.gob.pe\r\n" + body, nil, mailing.ErrSenderNotAllowed, "jefe@servir.gob.pe"},
			{"two Sender", ok + "Sender: avisos@servir.gob.pe\r\nSender: avisos@servir.gob.pe\r\n" + body, nil, mailing.ErrContent, "Sender"},
			{"bare LF in the header", "From: SERVIR <avisos@servir.gob.pe>\nBcc: x@evil.com\r\n" + hTo + body, nil, mailing.ErrContent, "header line 1 has a bare CR, LF or NUL"},
			{"bare CR in the header", ok + "X-Ref: a\rb\r\n" + body, nil, mailing.ErrContent, "header line 4"},
			{"bare LF ends the header", ok + "\nCuerpo\r\n", nil, mailing.ErrContent, "header line 4"},
			{"bare CR in the body", ok + "\r\nuno\rdos\r\n", nil, mailing.ErrContent, "bare CR"},
			{"bare CR ends the body", ok + "\r\nuno\r", nil, mailing.ErrContent, "bare CR"},
			{"bare LF in the body", ok + "\r\nuno\ndos\r\n", nil, mailing.ErrContent, "bare LF"},
			{"smuggled end of data", ok + "\r\nuno\n.\nMAIL FROM:<x@evil.com>\r\n", nil, mailing.ErrContent, "bare LF"},
			{"NUL in the header", ok + "X-Ref: a\x00b\r\n" + body, nil, mailing.ErrContent, "NUL"},
			{"NUL in the body", ok + "\r\nuno\x00dos\r\n", nil, mailing.ErrContent, "NUL"},
			{"header line without CRLF", hFrom + "To: ana@example.com", nil, mailing.ErrContent, "does not end with CRLF"},
			{"continuation first", " folded\r\n" + ok + body, nil, mailing.ErrContent, "continues no field"},
			{"not a field", ok + "Hola mundo\r\n" + body, nil, mailing.ErrContent, "not a field"},
			{"empty field name", ok + ": x\r\n" + body, nil, mailing.ErrContent, "not a field"},
			{"space in a field name", ok + "X Ref: a\r\n" + body, nil, mailing.ErrContent, "invalid field name"},
			{"8-bit field name", ok + "X-Ñ: a\r\n" + body, nil, mailing.ErrContent, "invalid field name"},
			{"unknown directive", ok + "X-Envios-Foo: 1\r\n" + body, nil, mailing.ErrContent, "X-Envios-Foo: unknown X-Envios- field"},
			{"directive twice", ok + "X-Envios-Campaign: a\r\nx-envios-campaign: b\r\n" + body, nil, mailing.ErrContent, "X-Envios-Campaign: given twice"},
			{"bad Send-At", ok + "X-Envios-Send-At: mañana\r\n" + body, nil, mailing.ErrContent, "X-Envios-Send-At"},
			{"Send-At not RFC 3339", ok + "X-Envios-Send-At: 2026-12-01 09:00\r\n" + body, nil, mailing.ErrContent, "X-Envios-Send-At"},
			{"bad priority", ok + "X-Envios-Priority: urgent\r\n" + body, nil, mailing.ErrContent, "X-Envios-Priority"},
			{"priority with a folded Bcc", ok + "X-Envios-Priority: bulk\r\n Bcc: x@evil.com\r\n" + body, nil, mailing.ErrContent, "X-Envios-Priority"},
			{"bad tags", ok + "X-Envios-Tags: ok, NOT OK\r\n" + body, nil, mailing.ErrContent, "X-Envios-Tags"},
			{"bad idempotency key", ok + "X-Envios-Idempotency-Key: has space\r\n" + body, nil, mailing.ErrContent, "X-Envios-Idempotency-Key"},
			{"malformed Message-ID", ok + "Message-ID: not an id\r\n" + body, nil, mailing.ErrContent, "Message-ID"},
			{"empty Message-ID", ok + "Message-ID: <>\r\n" + body, nil, mailing.ErrContent, "Message-ID"},
			{"Message-ID with angle brackets inside", ok + "Message-ID: <a<b@c.pe>\r\n" + body, nil, mailing.ErrContent, "Message-ID"},
			{"Message-ID without angle brackets", ok + "Message-ID: abc@servir.gob.pe\r\n" + body, nil, mailing.ErrContent, "Message-ID"},
			{"Message-ID without @", ok + "Message-ID: <abc>\r\n" + body, nil, mailing.ErrContent, "Message-ID"},
			{"Message-ID not ASCII", ok + "Message-ID: <\xff@servir.gob.pe>\r\n" + body, nil, mailing.ErrContent, "Message-ID"},
			{"Message-ID with a comment", ok + "Message-ID: <a@servir.gob.pe> (x)\r\n" + body, nil, mailing.ErrContent, "Message-ID"},
			{"two Message-ID", ok + hMsgID + hMsgID + body, nil, mailing.ErrContent, "Message-ID"},
			{"two Date", ok + hDate + hDate + body, nil, mailing.ErrContent, "Date"},
			{"multipart without a boundary", ok + "MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n" + body, nil, mailing.ErrContent, "MIME structure"},
			{"multipart with an unparsable type", ok + "MIME-Version: 1.0\r\nContent-Type: multipart/\r\n" + body, nil, mailing.ErrContent, "MIME structure"},
			{"two Subject", ok + hSubject + body, nil, mailing.ErrContent, "Subject"},
			{"too big", ok + "\r\n" + strings.Repeat("x", 2000) + "\r\n", nil, mailing.ErrTooBig, "the limit is 2000"},
			{"too many recipients", ok + body, []string{"a@x.pe", "b@x.pe", "c@x.pe", "d@x.pe"}, mailing.ErrTooManyRecipients, "4, the limit is 3"},
			{"no recipients", ok + body, []string{}, mailing.ErrNoRecipients, ""},
			{"bad recipient", ok + body, []string{"ana@example.com", "not an address"}, mailing.ErrAddress, "recipient"},
			{"recipient with CRLF", ok + body, []string{"ana@example.com\r\nBcc: x@evil.com"}, mailing.ErrAddress, "recipient"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := submission(tt.msg)
				if tt.rcpts != nil {
					s.Recipients = tt.rcpts
				}
				_, err := e.M.Submit(ctx, s)
				if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
					t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.text)
				}
			})
		}
		s := submission(ok + body)
		s.Account = "sjti/nadie"
		if _, err := e.M.Submit(ctx, s); !errors.Is(err, quota.ErrNotFound) {
			t.Fatalf("unknown account: %v", err)
		}
		s.Account = "no-slash"
		if _, err := e.M.Submit(ctx, s); err == nil {
			t.Fatal("a malformed account name was accepted")
		}
		for _, table := range []string{"mail_messages", "mail_recipients", "mail_tags"} {
			if n := e.Count(t, table); n != 0 {
				t.Fatalf("%d rows in %s after refusals", n, table)
			}
		}
		if u := e.Used(t, "sjti/talento"); u != 0 {
			t.Fatalf("used %d after refusals", u)
		}
		h, _ := e.M.Ledger().History(ctx, quota.HistoryFilter{Kind: quota.KindCharge})
		if len(h) != 0 {
			t.Fatalf("charges after refusals: %+v", h)
		}
		verify(t, e.M)
	})
}

// An encoded-word may decode to CR, LF or NUL: the message is delivered as
// submitted, and what envios keeps of its subject and From name is one
// line without NUL (a NUL used to fail the insert, and with it every
// message committed in the same group).
func TestSubmitDecodedSubjectAndNameAreCleaned(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 100}, mailing.Config{})
		ctx := context.Background()
		msg := "From: =?utf-8?q?SER=00VI=0D=0AR?= <avisos@servir.gob.pe>\r\n" + hTo + "Subject: =?utf-8?q?Ho=00la=0D=0AX-Evil:_1?=\r\n" + body
		r, err := e.M.Submit(ctx, submission(msg))
		if err != nil {
			t.Fatal(err)
		}
		info, err := e.M.Message(ctx, "", r.MessageID)
		if err != nil {
			t.Fatal(err)
		}
		if info.Subject != "HolaX-Evil: 1" || info.From != `"SERVIR" <avisos@servir.gob.pe>` {
			t.Fatalf("subject %q from %q", info.Subject, info.From)
		}
		if raw := storedRaw(t, e, r.MessageID); !bytes.HasPrefix(raw, []byte(msg[:len(msg)-len(body)])) {
			t.Fatalf("the header was not kept as submitted:\n%q", raw)
		}
	})
}

// 64 goroutines submit one-recipient messages against an allocation of
// 500 through the group committer: exactly 500 are accepted. Some
// subjects decode to a NUL: they must not fail the others' groups.
func TestConcurrentSubmitsNeverOverdraw(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 500}, mailing.Config{})
		ctx := context.Background()
		var ok, refused atomic.Int64
		var wg sync.WaitGroup
		errc := make(chan error, 64)
		for w := range 64 {
			wg.Go(func() {
				for i := range 10 {
					to := fmt.Sprintf("u%d-%d@example.com", w, i)
					subject := hSubject
					if w%8 == 0 {
						subject = "Subject: =?utf-8?q?a=00b?=\r\n"
					}
					s := submission(hFrom + "To: " + to + "\r\n" + subject + body)
					s.Recipients = []string{to}
					_, err := e.M.Submit(ctx, s)
					switch {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, quota.ErrInsufficient):
						refused.Add(1)
					default:
						errc <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Fatal(err)
		}
		if ok.Load() != 500 || refused.Load() != 140 {
			t.Fatalf("accepted %d refused %d, want 500 and 140", ok.Load(), refused.Load())
		}
		if e.Count(t, "mail_messages") != 500 || e.Count(t, "mail_recipients") != 500 || e.Used(t, "sjti/talento") != 500 {
			t.Fatalf("messages %d recipients %d used %d", e.Count(t, "mail_messages"), e.Count(t, "mail_recipients"), e.Used(t, "sjti/talento"))
		}
		verify(t, e.M)
	})
}

// FuzzSubmit: whatever the message and envelope, Submit either refuses
// with an error about the submission itself — never a database failure,
// which would fail every message of its group commit — or stores a
// message with CRLF line ends only, exactly one From, Message-ID and Date,
// no Bcc and no X-Envios- field, charges one per recipient, and Render
// returns the stored bytes.
func FuzzSubmit(f *testing.F) {
	for _, s := range []struct{ msg, rcpts string }{
		{hFrom + hTo + hSubject + body, "ana@example.com"},
		{hFrom + "Bcc: oculto@example.org,\r\n luis@example.org\r\n" + hTo + hMsgID + hDate + body, "ana@example.com,oculto@example.org"},
		{hFrom + "X-Envios-Priority: bulk\r\nX-Envios-Tags: a,b\r\nX-Envios-Campaign: c\r\nX-Envios-Send-At: 2027-01-01T00:00:00Z\r\n" + hTo + body, "ana@example.com"},
		{hFrom + "X-Envios-Idempotency-Key: k1\r\n" + hTo + body, "ana@example.com"},
		{hFrom + "X-Envios-Priority: bulk\r\n Bcc: x@evil.com\r\n" + body, "ana@example.com"},
		{"From: =?utf-8?q?a=00b?= <avisos@servir.gob.pe>\r\nSubject: =?utf-8?q?=FF=00=0D=0A?=\r\n" + body, "ana@example.com"},
		{hFrom + "Message-ID: <\xff@x.pe>\r\n" + body, "ana@example.com"},
		{hFrom + hTo + "\r\nuno\n.\nMAIL FROM:<x@evil.com>\r\n", "ana@example.com"},
		{hFrom + "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\n--x--\r\n", "ana@example.com"},
		{"From: jefe@servir.gob.pe\r\n" + body, "ana@example.com"},
		{hFrom + body, ""},
		{"Return-Path: <x@evil.com>\r\nContent-Length: 3\r\n" + hFrom + hTo + body, "ana@example.com"},
	} {
		f.Add([]byte(s.msg), s.rcpts, "app01.servir.local")
	}
	f.Add([]byte(hFrom+hTo+body), "ana@example.com", "x\r\nBcc: y@evil.com (")
	e := setup(f, storetest.Open(f, store.SQLite), map[string]int64{"enap/eventos": 10_000_000}, mailing.Config{MaxMessageSize: 64 << 10})
	f.Fuzz(func(t *testing.T, msg []byte, rcpts, helo string) {
		ctx := context.Background()
		used := e.Used(t, "enap/eventos")
		var envelope []string
		if rcpts != "" {
			envelope = strings.Split(rcpts, ",")
		}
		r, err := e.M.Submit(ctx, mailing.Submission{Account: "enap/eventos", Recipients: envelope, Message: msg,
			Trace: &mailing.Trace{Helo: helo, Addr: netip.MustParseAddr("10.0.0.7"), By: "relay.test", With: "ESMTPSA"}})
		if err != nil {
			for _, decided := range []error{mailing.ErrContent, mailing.ErrAddress, mailing.ErrSenderNotAllowed, mailing.ErrNoDKIMKey,
				mailing.ErrTooBig, mailing.ErrTooManyRecipients, mailing.ErrNoRecipients} {
				if errors.Is(err, decided) {
					if u := e.Used(t, "enap/eventos"); u != used {
						t.Fatalf("refused (%v) but charged %d", err, u-used)
					}
					return
				}
			}
			t.Fatalf("not an error about the submission: %v", err)
		}
		if r.Duplicate {
			return
		}
		if u := e.Used(t, "enap/eventos"); u-used != int64(r.Recipients) {
			t.Fatalf("%d recipients, charged %d", r.Recipients, u-used)
		}
		raw := storedRaw(t, e, r.MessageID)
		if bytes.IndexByte(raw, 0) >= 0 || bytes.Count(raw, []byte("\r")) != bytes.Count(raw, []byte("\r\n")) ||
			bytes.Count(raw, []byte("\n")) != bytes.Count(raw, []byte("\r\n")) {
			t.Fatalf("stored a bare CR, LF or NUL: %q", raw)
		}
		header, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
		counts := map[string]int{}
		for _, line := range strings.Split(string(header), "\r\n") {
			if name, _, ok := strings.Cut(line, ":"); ok && line[0] != ' ' && line[0] != '\t' {
				counts[strings.ToLower(name)]++
				if strings.HasPrefix(strings.ToLower(name), "x-envios-") {
					t.Fatalf("a directive was stored: %q", line)
				}
			}
		}
		if !bytes.HasPrefix(raw, []byte("Received: from ")) {
			t.Fatalf("no Received field on top:\n%q", raw)
		}
		if counts["from"] != 1 || counts["message-id"] != 1 || counts["date"] != 1 || counts["bcc"] != 0 ||
			counts["return-path"] != 0 || counts["content-length"] != 0 || counts["received"] < 1 {
			t.Fatalf("stored header fields %v:\n%q", counts, raw)
		}
		rs, err := e.M.Recipients(ctx, "", r.MessageID, -1, 1)
		if err != nil || len(rs) != 1 {
			t.Fatalf("recipients %v %v", rs, err)
		}
		if b, err := e.M.Render(ctx, rs[0].ID); err != nil || !bytes.Equal(b, raw) {
			t.Fatalf("Render %q %v, want the stored bytes", b, err)
		}
	})
}

// Octets that are not UTF-8 in the subject or the From name (a legacy
// system's Latin-1 sent raw, or an encoded-word that lies about its
// charset) are kept as submitted in the message, and what envios keeps of
// them is valid text: both engines store it (PostgreSQL refused invalid
// UTF-8 in a text column, and with it the whole group commit).
func TestSubmitRawLatin1HeaderIsStored(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 100}, mailing.Config{})
		ctx := context.Background()
		for _, tc := range []struct{ msg, subject, from string }{
			{hFrom + hTo + "Subject: Convocatoria a\xf1o 2027\r\n" + body, "Convocatoria a\ufffdo 2027", `"SERVIR" <avisos@servir.gob.pe>`},
			{"From: =?utf-8?q?Direcci=F3n?= <avisos@servir.gob.pe>\r\n" + hTo + "Subject: =?utf-8?q?A=F1o_2027?=\r\n" + body,
				"A\ufffdo 2027", "=?utf-8?q?Direcci=EF=BF=BDn?= <avisos@servir.gob.pe>"}, // U+FFFD, shown as RFC 5322 shows names
			{"From: =?iso-8859-1?q?Direcci=F3n?= <avisos@servir.gob.pe>\r\n" + hTo + "Subject: =?iso-8859-1?q?A=F1o_2027?=\r\n" + body,
				"Año 2027", "=?utf-8?q?Direcci=C3=B3n?= <avisos@servir.gob.pe>"},
		} {
			r, err := e.M.Submit(ctx, submission(tc.msg))
			if err != nil {
				t.Fatal(err)
			}
			info, err := e.M.Message(ctx, "", r.MessageID)
			if err != nil {
				t.Fatal(err)
			}
			if info.Subject != tc.subject || info.From != tc.from || !utf8.ValidString(info.From) {
				t.Fatalf("subject %q from %q, want %q %q", info.Subject, info.From, tc.subject, tc.from)
			}
			if raw := storedRaw(t, e, r.MessageID); !bytes.HasPrefix(raw, []byte(tc.msg[:len(tc.msg)-len(body)])) {
				t.Fatalf("the header was not kept as submitted:\n%q", raw)
			}
		}
	})
}
