package mailing_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jhillyerd/enmime/v2"
	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailingtest"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/quota"
)

type env = mailingtest.Env

var (
	start  = mailingtest.Start
	setup  = mailingtest.Setup
	verify = mailingtest.Verify
)

var basic = mailingtest.Basic

func TestSendRefusesBadInputAndChargesNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 100, "sjci/imagen": 100}, mailing.Config{MaxRecipients: 3, MaxMessageSize: 1000})
		ctx := context.Background()
		if _, err := e.M.Ledger().SetDisabled(ctx, "sjci/imagen", true, "t"); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			edit func(*mailing.Message)
			want error
			text string
		}{
			{"bad to", func(m *mailing.Message) { m.To = []string{"not an address"} }, mailing.ErrAddress, "not an address"},
			{"no domain dot", func(m *mailing.Message) { m.To = []string{"a@localhost"} }, mailing.ErrAddress, "two labels"},
			{"address literal", func(m *mailing.Message) { m.To = []string{"a@[127.0.0.1]"} }, mailing.ErrAddress, "literal"},
			{"utf8 local part", func(m *mailing.Message) { m.To = []string{"añ@example.com"} }, mailing.ErrAddress, "ASCII"},
			{"crlf in to", func(m *mailing.Message) { m.To = []string{"a@example.com\r\nBcc: x@evil.com"} }, mailing.ErrAddress, "CR, LF"},
			{"encoded crlf in name", func(m *mailing.Message) { m.To = []string{"=?utf-8?q?a=0D=0AX-Evil=3A_1?= <a@example.com>"} }, mailing.ErrAddress, "display name"},
			{"bad cc", func(m *mailing.Message) { m.Cc = []string{"@example.com"} }, mailing.ErrAddress, ""},
			{"bad bcc", func(m *mailing.Message) { m.Bcc = []string{"x@-bad-.com"} }, mailing.ErrAddress, ""},
			{"bad from", func(m *mailing.Message) { m.From = "avisos" }, mailing.ErrAddress, ""},
			{"crlf from name", func(m *mailing.Message) { m.From = "\"A\r\nB\" <avisos@servir.gob.pe>" }, mailing.ErrAddress, "CR"},
			{"bad reply-to", func(m *mailing.Message) { m.ReplyTo = []string{"x"} }, mailing.ErrAddress, ""},
			{"crlf subject", func(m *mailing.Message) { m.Subject = "Hola\r\nBcc: x@evil.com" }, mailing.ErrContent, "subject contains CR"},
			{"lf subject", func(m *mailing.Message) { m.Subject = "Hola\nX: y" }, mailing.ErrContent, "subject"},
			{"crlf header value", func(m *mailing.Message) { m.Headers = []mailing.Header{{Name: "X-Ref", Value: "a\r\nBcc: x"}} }, mailing.ErrContent, "X-Ref"},
			{"bad header name", func(m *mailing.Message) { m.Headers = []mailing.Header{{Name: "X Ref", Value: "a"}} }, mailing.ErrContent, "field name"},
			{"reserved header", func(m *mailing.Message) { m.Headers = []mailing.Header{{Name: "bcc", Value: "x@evil.com"}} }, mailing.ErrContent, "Bcc is set by envios"},
			{"envios header", func(m *mailing.Message) { m.Headers = []mailing.Header{{Name: "X-Envios-Send-At", Value: "x"}} }, mailing.ErrContent, "set by envios"},
			{"crlf campaign", func(m *mailing.Message) { m.Campaign = "a\nb" }, mailing.ErrContent, "campaign"},
			{"crlf attachment name", func(m *mailing.Message) {
				m.Attachments = []mailing.Attachment{{Filename: "a\r\n.pdf", Data: []byte("x")}}
			}, mailing.ErrContent, "file name"},
			{"bad content type", func(m *mailing.Message) {
				m.Attachments = []mailing.Attachment{{Filename: "a.bin", ContentType: "no type", Data: []byte("x")}}
			}, mailing.ErrContent, "media type"},
			{"bad tag", func(m *mailing.Message) { m.Tags = []string{"Bad Tag"} }, mailing.ErrContent, "tag"},
			{"bad priority", func(m *mailing.Message) { m.Priority = "urgent" }, mailing.ErrContent, "priority"},
			{"bad key", func(m *mailing.Message) { m.IdempotencyKey = "has space" }, mailing.ErrContent, "idempotency key"},
			{"no body", func(m *mailing.Message) { m.Text = "" }, mailing.ErrContent, "body"},
			{"latin-1 text", func(m *mailing.Message) { m.Text = "A\xf1o 2027" }, mailing.ErrContent, "the text body is not valid UTF-8"},
			{"NUL in html", func(m *mailing.Message) { m.HTML = "<p>a\x00b</p>" }, mailing.ErrContent, "the HTML body is not valid UTF-8"},
			{"latin-1 subject", func(m *mailing.Message) { m.Subject = "A\xf1o" }, mailing.ErrContent, "subject is not valid UTF-8"},
			{"too big", func(m *mailing.Message) { m.Text = strings.Repeat("x", 1001) }, mailing.ErrTooBig, "1001 bytes"},
			{"too many recipients", func(m *mailing.Message) { m.To = []string{"a@x.pe", "b@x.pe", "c@x.pe", "d@x.pe"} }, mailing.ErrTooManyRecipients, "4"},
			{"no recipients", func(m *mailing.Message) { m.To = nil }, mailing.ErrNoRecipients, ""},
			{"unknown account", func(m *mailing.Message) { m.Account = "sjti/nadie" }, quota.ErrNotFound, "sjti/nadie"},
			{"disabled account", func(m *mailing.Message) { m.Account = "sjci/imagen" }, quota.ErrDisabled, "sjci/imagen"},
			{"sender not allowed", func(m *mailing.Message) { m.From = "jefe@servir.gob.pe" }, mailing.ErrSenderNotAllowed, "may not send as jefe@servir.gob.pe"},
			{"sender other domain", func(m *mailing.Message) { m.From = "avisos@gmail.com" }, mailing.ErrSenderNotAllowed, ""},
			{"pool exhausted", func(m *mailing.Message) {
				m.To = []string{"a@x.pe", "b@x.pe", "c@x.pe"}
				m.Account = "sjti/talento"
			}, nil, ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				msg := basic()
				tt.edit(&msg)
				_, err := e.M.Send(ctx, msg)
				if tt.want == nil {
					if err != nil {
						t.Fatalf("control case failed: %v", err)
					}
					return
				}
				if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
					t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.text)
				}
			})
		}
		// Only the control case was stored and charged.
		if n := e.Count(t, "mail_messages"); n != 1 {
			t.Fatalf("%d messages stored", n)
		}
		if u := e.Used(t, "sjti/talento"); u != 3 {
			t.Fatalf("used = %d, want 3", u)
		}
		// Pool exhausted: errors.Is quota.ErrInsufficient, nothing stored.
		msg := basic()
		msg.To = []string{"a@x.pe", "b@x.pe", "c@x.pe"}
		for range 32 {
			if _, err := e.M.Send(ctx, msg); err != nil {
				if !errors.Is(err, quota.ErrInsufficient) {
					t.Fatalf("err = %v", err)
				}
				break
			}
		}
		if u := e.Used(t, "sjti/talento"); u != 99 {
			t.Fatalf("used = %d, want 99 (33 sends of 3)", u)
		}
		if n := e.Count(t, "mail_recipients"); n != 99 {
			t.Fatalf("%d recipient rows, want 99", n)
		}
		verify(t, e.M)
	})
}

func TestSendStoresRecipientsAndRenders(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{})
		ctx := context.Background()
		msg := mailing.Message{Account: "enap/eventos", From: "Escuela <cursos@servir.gob.pe>",
			ReplyTo: []string{"consultas@servir.gob.pe"},
			To:      []string{"Ana Pérez <ana@example.com>", "ANA@example.com"}, Cc: []string{"luis@münchen.de"}, Bcc: []string{"oculto@example.org"},
			Subject: "Invitación: año 2027", Text: "Hola", HTML: "<p>Hola</p>",
			Headers:     []mailing.Header{{Name: "X-Curso", Value: "GP-101"}},
			Attachments: []mailing.Attachment{{Filename: "programa.pdf", Data: []byte("%PDF-1.4")}},
			Tags:        []string{"cursos", "2027"}, Campaign: "invitaciones-2027"}
		r, err := e.M.Send(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		if r.Recipients != 3 || r.Status != mailing.StatusQueued || r.Duplicate {
			t.Fatalf("receipt %+v (the duplicate ANA@ must be folded)", r)
		}
		info, err := e.M.Message(ctx, "enap/eventos", r.MessageID)
		if err != nil {
			t.Fatal(err)
		}
		if info.Counts[mailing.StatusQueued] != 3 || info.Campaign != "invitaciones-2027" || strings.Join(info.Tags, ",") != "2027,cursos" || info.Priority != mailing.Transactional {
			t.Fatalf("info %+v", info)
		}
		if _, err := e.M.Message(ctx, "sjti/talento", r.MessageID); !errors.Is(err, mailing.ErrNotFound) {
			t.Fatalf("another account sees the message: %v", err)
		}
		rs, err := e.M.Recipients(ctx, "", r.MessageID, -1, 0)
		if err != nil || len(rs) != 3 {
			t.Fatalf("recipients %v %v", rs, err)
		}
		if rs[1].Address != "luis@xn--mnchen-3ya.de" || rs[2].Kind != "bcc" || !rs[0].AcceptedAt.Equal(start) {
			t.Fatalf("recipients %+v", rs)
		}
		if len(r.RecipientIDs) != 3 || r.RecipientIDs[0] != rs[0].ID || r.RecipientIDs[2] != rs[2].ID {
			t.Fatalf("receipt ids %v, rows %d %d %d", r.RecipientIDs, rs[0].ID, rs[1].ID, rs[2].ID)
		}
		h, _ := e.M.Ledger().History(ctx, quota.HistoryFilter{Kind: quota.KindCharge})
		if len(h) != 1 || h[0].Amount != 3 || h[0].Reference != r.MessageID || h[0].Origin != quota.OriginLibrary {
			t.Fatalf("charge entries %+v", h)
		}
		raw, err := e.M.Render(ctx, rs[2].ID)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := e.M.Render(ctx, rs[2].ID)
		if !bytes.Equal(raw, again) {
			t.Fatal("Render is not deterministic")
		}
		env, err := enmime.ReadEnvelope(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]string{
			"Subject": "Invitación: año 2027", "X-Curso": "GP-101",
			"Message-Id": "<" + r.MessageID + "@envios.servir.gob.pe>", "Reply-To": "<consultas@servir.gob.pe>",
		} {
			if got := env.GetHeader(name); got != want {
				t.Errorf("%s = %q, want %q", name, got, want)
			}
		}
		if to := env.GetHeader("To"); !strings.Contains(to, "ana@example.com") || strings.Contains(string(raw), "oculto") {
			t.Errorf("To %q; Bcc must not appear in the message", to)
		}
		if env.Text != "Hola" || !strings.Contains(env.HTML, "<p>Hola</p>") || len(env.Attachments) != 1 || env.Attachments[0].FileName != "programa.pdf" {
			t.Errorf("body text %q html %q attachments %d", env.Text, env.HTML, len(env.Attachments))
		}
		verify(t, e.M)
	})
}

func TestBatchPersonalises(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"gdcrsc/capacidades": 100}, mailing.Config{})
		ctx := context.Background()
		type person struct {
			Nombre string
			Curso  string
		}
		rec, err := e.M.SendBatch(ctx, mailing.Batch{
			Account: "gdcrsc/capacidades", From: "avisos@servir.gob.pe",
			Subject: "{{.Nombre}}, su curso {{.Curso}}",
			Text:    "Estimado/a {{.Nombre}}: {{.Curso}}",
			HTML:    "<p>Estimado/a {{.Nombre}}</p>",
			Recipients: mailing.List(
				mailing.Recipient{Address: "ana@example.com", Data: person{"Ana", "Ética"}},
				mailing.Recipient{Address: "bad address", Data: person{"X", "Y"}},
				mailing.Recipient{Address: "luis@example.com", Data: map[string]any{"Nombre": "<b>Luis</b>", "Curso": "{{.Secreto}}"}},
				mailing.Recipient{Address: "eva@example.com", Data: map[string]any{"Nombre": "Eva"}},                                // no Curso
				mailing.Recipient{Address: "inj@example.com", Data: map[string]any{"Nombre": "x\r\nBcc: y@evil.com", "Curso": "c"}}, // breaks the subject
				mailing.Recipient{Address: "raw@example.com", Data: 42},
			),
		})
		if err != nil {
			t.Fatal(err)
		}
		if rec.Accepted != 2 || rec.NRejected != 4 {
			t.Fatalf("receipt %+v", rec)
		}
		wantRejected := map[int]string{1: "invalid address", 3: "missing field \"Curso\"", 4: "rendered subject contains CR", 5: "map or a struct"}
		for _, r := range rec.Rejected {
			if w := wantRejected[r.Index]; w == "" || !strings.Contains(r.Err.Error(), w) {
				t.Errorf("rejection %d: %v, want %q", r.Index, r.Err, w)
			}
		}
		if u := e.Used(t, "gdcrsc/capacidades"); u != 2 {
			t.Fatalf("used %d", u)
		}
		rs, err := e.M.Recipients(ctx, "", rec.MessageID, -1, 0)
		if err != nil || len(rs) != 2 || rs[0].Seq != 0 || rs[1].Seq != 2 || rs[0].RFCMessageID == rs[1].RFCMessageID {
			t.Fatalf("recipients %+v %v", rs, err)
		}
		raw, err := e.M.Render(ctx, rs[1].ID)
		if err != nil {
			t.Fatal(err)
		}
		env, err := enmime.ReadEnvelope(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		if s := env.GetHeader("Subject"); s != "<b>Luis</b>, su curso {{.Secreto}}" {
			t.Errorf("subject %q: data must be inserted literally", s)
		}
		if !strings.Contains(env.HTML, "&lt;b&gt;Luis&lt;/b&gt;") || env.Text != "Estimado/a <b>Luis</b>: {{.Secreto}}" {
			t.Errorf("html %q text %q", env.HTML, env.Text)
		}
		if env.GetHeader("To") != "<luis@example.com>" || env.GetHeader("Message-Id") != "<"+rs[1].RFCMessageID+">" {
			t.Errorf("To %q Message-ID %q", env.GetHeader("To"), env.GetHeader("Message-Id"))
		}
		// A template that does not parse is refused before anything is charged.
		_, err = e.M.SendBatch(ctx, mailing.Batch{Account: "gdcrsc/capacidades", From: "avisos@servir.gob.pe",
			Subject: "{{.Nombre", Text: "x", Recipients: mailing.List(mailing.Recipient{Address: "a@example.com"})})
		if !errors.Is(err, mailing.ErrContent) {
			t.Fatalf("bad template: %v", err)
		}
		verify(t, e.M)
	})
}

func TestBatchThatDoesNotFitChargesNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 25, "enap/biblioteca": 100}, mailing.Config{ChunkSize: 10})
		ctx := context.Background()
		recips := func(n int) []mailing.Recipient {
			var rs []mailing.Recipient
			for i := range n {
				rs = append(rs, mailing.Recipient{Address: fmt.Sprintf("p%d@example.com", i), Data: map[string]int{"N": i}})
			}
			return rs
		}
		b := mailing.Batch{Account: "enap/eventos", From: "avisos@servir.gob.pe", Subject: "N={{.N}}", Text: "x",
			IdempotencyKey: "campaign-1"}
		// Known size beyond the allocation: refused whole.
		b.Recipients, b.Expected = mailing.List(recips(30)...), 30
		rec, err := e.M.SendBatch(ctx, b)
		if !errors.Is(err, quota.ErrInsufficient) || rec.Accepted != 0 {
			t.Fatalf("expected 30 of 25: %+v %v", rec, err)
		}
		if e.Count(t, "mail_messages") != 0 || e.Count(t, "mail_recipients") != 0 || e.Used(t, "enap/eventos") != 0 {
			t.Fatal("a refused batch stored or charged something")
		}
		// A chunk that does not fit charges nothing of that chunk.
		b.Expected = 0
		rec, err = e.M.SendBatch(ctx, b)
		if !errors.Is(err, quota.ErrInsufficient) || rec.Accepted != 20 {
			t.Fatalf("stream of 30 in chunks of 10 over 25: %+v %v", rec, err)
		}
		if e.Used(t, "enap/eventos") != 20 || e.Count(t, "mail_recipients") != 20 {
			t.Fatalf("used %d rows %d", e.Used(t, "enap/eventos"), e.Count(t, "mail_recipients"))
		}
		// More allocation, the same key: the batch resumes where it stopped.
		if err := e.M.Ledger().Transfer(ctx, quota.Transfer{From: "enap/biblioteca", To: "enap/eventos", Amount: 10, Actor: "t"}); err != nil {
			t.Fatal(err)
		}
		rec2, err := e.M.SendBatch(ctx, b)
		if err != nil || rec2.MessageID != rec.MessageID || rec2.Resumed != 20 || rec2.Accepted != 10 {
			t.Fatalf("resume: %+v %v", rec2, err)
		}
		rec3, err := e.M.SendBatch(ctx, b)
		if err != nil || rec3.Accepted != 0 || rec3.Resumed != 30 {
			t.Fatalf("replay of a complete batch: %+v %v", rec3, err)
		}
		if e.Used(t, "enap/eventos") != 30 || e.Count(t, "mail_recipients") != 30 {
			t.Fatal("resume charged or stored twice")
		}
		info, _ := e.M.Message(ctx, "", rec.MessageID)
		if info.Recipients != 30 || info.Counts[mailing.StatusQueued] != 30 {
			t.Fatalf("info %+v", info)
		}
		verify(t, e.M)
	})
}

// 64 goroutines send one-recipient messages against an allocation of
// 1,000: exactly 1,000 are accepted.
func TestConcurrentSendsNeverOverdraw(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 1000}, mailing.Config{})
		ctx := context.Background()
		var ok, refused atomic.Int64
		var wg sync.WaitGroup
		errc := make(chan error, 64)
		for w := range 64 {
			wg.Go(func() {
				for i := range 20 {
					msg := basic()
					msg.To = []string{fmt.Sprintf("u%d-%d@example.com", w, i)}
					_, err := e.M.Send(ctx, msg)
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
		if ok.Load() != 1000 || refused.Load() != 280 || e.Count(t, "mail_recipients") != 1000 || e.Used(t, "sjti/talento") != 1000 {
			t.Fatalf("accepted %d refused %d rows %d", ok.Load(), refused.Load(), e.Count(t, "mail_recipients"))
		}
		verify(t, e.M)
	})
}

func TestIdempotencyUnderConcurrency(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 1000}, mailing.Config{})
		ctx := context.Background()
		msg := basic()
		msg.To = []string{"a@example.com", "b@example.com"}
		msg.IdempotencyKey = "order-42/notice"
		ids := make([]string, 16)
		dups := make([]bool, 16)
		var wg sync.WaitGroup
		for i := range ids {
			wg.Go(func() {
				r, err := e.M.Send(ctx, msg)
				if err != nil {
					t.Error(err)
					return
				}
				ids[i], dups[i] = r.MessageID, r.Duplicate
			})
		}
		wg.Wait()
		first := 0
		for i := range ids {
			if ids[i] != ids[0] {
				t.Fatalf("call %d got %s, call 0 got %s", i, ids[i], ids[0])
			}
			if !dups[i] {
				first++
			}
		}
		if first != 1 || e.Count(t, "mail_messages") != 1 || e.Used(t, "sjti/talento") != 2 {
			t.Fatalf("%d originals, %d messages, used %d", first, e.Count(t, "mail_messages"), e.Used(t, "sjti/talento"))
		}
		// The same key on another account is another message.
		verify(t, e.M)
	})
}

func TestScheduleAndCancel(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{})
		ctx := context.Background()
		msg := basic()
		msg.Account = "enap/eventos"
		msg.To = []string{"a@example.com", "b@example.com"}
		msg.SendAt = start.Add(2 * time.Hour)
		r, err := e.M.Send(ctx, msg)
		if err != nil || r.Status != mailing.StatusScheduled {
			t.Fatalf("%+v %v", r, err)
		}
		if n, err := e.M.PromoteDue(ctx); err != nil || n != 0 {
			t.Fatalf("promoted %d before time: %v", n, err)
		}
		e.Clock.Add(2 * time.Hour)
		// A new Mailer on the same database (a restart) sees them due.
		m2, err := mailing.New(mailing.Config{DB: db, Now: e.Clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		if n, err := m2.PromoteDue(ctx); err != nil || n != 2 {
			t.Fatalf("promoted %d at send-at: %v", n, err)
		}
		// A scheduled batch, cancelled before its time: released.
		b, err := e.M.SendBatch(ctx, mailing.Batch{Account: "enap/eventos", From: "avisos@servir.gob.pe", Subject: "s", Text: "t",
			SendAt: start.AddDate(0, 0, 7), Recipients: mailing.List(
				mailing.Recipient{Address: "x@example.com"}, mailing.Recipient{Address: "y@example.com"}, mailing.Recipient{Address: "z@example.com"})})
		if err != nil {
			t.Fatal(err)
		}
		if u := e.Used(t, "enap/eventos"); u != 5 {
			t.Fatalf("used %d", u)
		}
		c, err := e.M.Cancel(ctx, "enap/eventos", b.MessageID, "test")
		if err != nil || c.Cancelled != 3 || c.Released != 3 {
			t.Fatalf("cancel %+v %v", c, err)
		}
		if c, err := e.M.Cancel(ctx, "enap/eventos", b.MessageID, "test"); err != nil || c.Cancelled != 0 {
			t.Fatalf("second cancel %+v %v", c, err)
		}
		if _, err := e.M.Cancel(ctx, "sjti/talento", b.MessageID, "test"); !errors.Is(err, mailing.ErrNotFound) {
			t.Fatalf("cancel from another account: %v", err)
		}
		info, _ := e.M.Message(ctx, "", b.MessageID)
		if info.Counts[mailing.StatusCancelled] != 3 || info.CancelledAt.IsZero() {
			t.Fatalf("info %+v", info)
		}
		if u := e.Used(t, "enap/eventos"); u != 2 {
			t.Fatalf("used %d after cancel, want 2", u)
		}
		h, _ := e.M.Ledger().History(ctx, quota.HistoryFilter{Kind: quota.KindRelease})
		if len(h) != 1 || h[0].Amount != 3 || h[0].Reason != "cancelled" || h[0].Reference != b.MessageID {
			t.Fatalf("release entries %+v", h)
		}
		verify(t, e.M)
	})
}

func TestSenders(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 10, "sjti/talento": 10}, mailing.Config{})
		ctx := context.Background()
		if added, err := e.M.AddSender(ctx, "enap/eventos", "@SERVIR.gob.pe", "t"); err != nil || added {
			t.Fatalf("re-adding a domain: added %v, %v", added, err)
		}
		for _, bad := range []string{"", "@", "@localhost", "Name <a@b.pe>", "a@b@c", "x@[1.2.3.4]"} {
			if _, err := e.M.AddSender(ctx, "enap/eventos", bad, "t"); !errors.Is(err, mailing.ErrAddress) {
				t.Errorf("AddSender(%q): %v", bad, err)
			}
		}
		ss, err := e.M.Senders(ctx, "enap/eventos")
		if err != nil || len(ss) != 2 || ss[0].Pattern != "@servir.gob.pe" || ss[1].Pattern != "avisos@servir.gob.pe" {
			t.Fatalf("senders %+v %v", ss, err)
		}
		// The domain identity lets enap/eventos send as anyone@servir.gob.pe; sjti/talento only as avisos@.
		msg := basic()
		msg.From = "cursos@servir.gob.pe"
		msg.Account = "enap/eventos"
		if _, err := e.M.Send(ctx, msg); err != nil {
			t.Fatal(err)
		}
		msg.Account = "sjti/talento"
		if _, err := e.M.Send(ctx, msg); !errors.Is(err, mailing.ErrSenderNotAllowed) {
			t.Fatalf("sjti/talento as cursos@: %v", err)
		}
		if err := e.M.RemoveSender(ctx, "sjti/talento", "avisos@servir.gob.pe", "t"); err != nil {
			t.Fatal(err)
		}
		if err := e.M.RemoveSender(ctx, "sjti/talento", "avisos@servir.gob.pe", "t"); !errors.Is(err, quota.ErrNotFound) {
			t.Fatalf("removing twice: %v", err)
		}
		msg.From = "avisos@servir.gob.pe"
		if _, err := e.M.Send(ctx, msg); !errors.Is(err, mailing.ErrSenderNotAllowed) {
			t.Fatalf("after removal: %v", err)
		}
	})
}

// Two callers run the same batch (same key, same recipients) at once: every
// recipient is stored and charged exactly once, under one message id.
func TestConcurrentBatchesWithOneKey(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 10_000}, mailing.Config{ChunkSize: 50})
		ctx := context.Background()
		var rs []mailing.Recipient
		for i := range 1000 {
			rs = append(rs, mailing.Recipient{Address: fmt.Sprintf("p%d@example.com", i), Data: map[string]any{"N": 12345678 + i}})
		}
		b := mailing.Batch{Account: "enap/eventos", From: "avisos@servir.gob.pe", Subject: "N={{.N}}", Text: "x",
			IdempotencyKey: "twice", Recipients: mailing.List(rs...)}
		recs := make([]mailing.BatchReceipt, 3)
		var wg sync.WaitGroup
		for i := range recs {
			wg.Go(func() {
				var err error
				recs[i], err = e.M.SendBatch(ctx, b)
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		accepted := 0
		for _, r := range recs {
			if r.MessageID != recs[0].MessageID || r.Accepted+r.Resumed != 1000 {
				t.Fatalf("receipts %+v", recs)
			}
			accepted += r.Accepted
		}
		if accepted != 1000 || e.Used(t, "enap/eventos") != 1000 || e.Count(t, "mail_recipients") != 1000 || e.Count(t, "mail_messages") != 1 {
			t.Fatalf("accepted %d, used %d, rows %d", accepted, e.Used(t, "enap/eventos"), e.Count(t, "mail_recipients"))
		}
		// Large numbers render as written, at acceptance and at delivery.
		list, _ := e.M.Recipients(ctx, "", recs[0].MessageID, -1, 1)
		raw, err := e.M.Render(ctx, list[0].ID)
		if err != nil || !bytes.Contains(raw, []byte("Subject: N=12345678\r\n")) {
			t.Fatalf("render: %v\n%s", err, raw)
		}
		verify(t, e.M)
	})
}

func TestListByCampaignAndTagAndInlineImages(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 100, "sjti/talento": 100}, mailing.Config{})
		ctx := context.Background()
		send := func(account, campaign string, tags ...string) string {
			msg := basic()
			msg.Account, msg.Campaign, msg.Tags = account, campaign, tags
			msg.HTML = `<p><img src="cid:logo"></p>`
			msg.Attachments = []mailing.Attachment{{Filename: "logo.png", ContentID: "logo", Data: []byte("\x89PNG")}}
			r, err := e.M.Send(ctx, msg)
			if err != nil {
				t.Fatal(err)
			}
			e.Clock.Add(time.Minute)
			return r.MessageID
		}
		a := send("enap/eventos", "cursos", "etica")
		b := send("enap/eventos", "cursos", "gestion")
		c := send("sjti/talento", "", "gestion")
		for _, tt := range []struct {
			f    mailing.MessageFilter
			want []string
		}{
			{mailing.MessageFilter{Campaign: "cursos"}, []string{b, a}},
			{mailing.MessageFilter{Tag: "gestion"}, []string{c, b}},
			{mailing.MessageFilter{Account: "sjti/talento"}, []string{c}},
			{mailing.MessageFilter{Account: "enap/eventos", Tag: "gestion"}, []string{b}},
			{mailing.MessageFilter{Limit: 1}, []string{c}},
		} {
			got, err := e.M.Messages(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, m := range got {
				ids = append(ids, m.ID)
			}
			if fmt.Sprint(ids) != fmt.Sprint(tt.want) {
				t.Errorf("%+v: %v, want %v", tt.f, ids, tt.want)
			}
		}
		rs, _ := e.M.Recipients(ctx, "", c, -1, 0)
		raw, err := e.M.Render(ctx, rs[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		env, err := enmime.ReadEnvelope(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		if len(env.Inlines) != 1 || env.Inlines[0].ContentID != "logo" || !strings.Contains(string(raw), "multipart/related") {
			t.Fatalf("inline image missing:\n%s", raw)
		}
	})
}

func TestShutdownRefusesNewCallsOnlyForItsMailer(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 100}, mailing.Config{})
		other, err := mailing.New(mailing.Config{DB: db, Now: e.Clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := e.M.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := e.M.Send(ctx, basic()); !errors.Is(err, mailing.ErrClosed) {
			t.Fatalf("send after shutdown: %v", err)
		}
		if _, err := other.Send(ctx, basic()); err != nil {
			t.Fatalf("another mailer on the same database: %v", err)
		}
	})
}

func TestNoDKIMKeyRefusedAtAcceptance(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 100}, mailing.Config{})
		ctx := context.Background()
		if _, err := e.M.AddSender(ctx, "sjti/talento", "@talento.pe", "t"); err != nil {
			t.Fatal(err)
		}
		msg := basic()
		msg.From = "avisos@talento.pe"
		if _, err := e.M.Send(ctx, msg); !errors.Is(err, mailing.ErrNoDKIMKey) || !strings.Contains(err.Error(), "relayd domain add talento.pe") {
			t.Fatalf("no key: %v", err)
		}
		_, err := e.M.SendBatch(ctx, mailing.Batch{Account: "sjti/talento", From: "avisos@talento.pe", Subject: "s", Text: "t",
			Recipients: mailing.List(mailing.Recipient{Address: "a@example.com"})})
		if !errors.Is(err, mailing.ErrNoDKIMKey) {
			t.Fatalf("batch without key: %v", err)
		}
		if u := e.Used(t, "sjti/talento"); u != 0 {
			t.Fatalf("charged %d", u)
		}
		// Configured as allowed to send unsigned: accepted.
		m2, err := mailing.New(mailing.Config{DB: db, Now: e.Clock.Now, UnsignedDomains: []string{"TALENTO.pe"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m2.Send(ctx, msg); err != nil {
			t.Fatalf("unsigned allowed: %v", err)
		}
	})
}
