package mailstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/servir-pe/envios/internal/address"
	"github.com/servir-pe/envios/internal/compose"
)

// Render builds the exact RFC 5322 message for recipient id, as the
// delivery engine will send it (before DKIM signing): a batch recipient's
// templates are rendered with its data; every recipient of a message sent
// with Send gets the same bytes. Building it twice gives the same bytes.
func (s *Store) Render(ctx context.Context, recipientID int64) ([]byte, error) {
	var r RecipientRow
	if err := s.DB.NewSelect().Model(&r).Where("id = ?", recipientID).Scan(ctx); err != nil {
		return nil, fmt.Errorf("mailstore: read recipient %d: %w", recipientID, err)
	}
	src, err := s.Load(ctx, r.MessageID)
	if err != nil {
		return nil, err
	}
	return src.Render(r)
}

// Source is what every recipient of one message shares: the message row,
// its attachments, its parsed templates (batch) or header recipients
// (single). The engine caches it per message.
type Source struct {
	Msg  MessageRow
	base compose.Part
	tpl  *compose.Templates // batch
	raw  []byte             // a message submitted whole: sent as stored
}

// From is the message's From address.
func (src *Source) From() address.Address { return src.base.From }

// Personal reports whether each recipient gets a message of its own (a
// batch, rendered from its data) rather than the same bytes.
func (src *Source) Personal() bool { return src.tpl != nil }

// Load reads message messageID and what its recipients share.
func (s *Store) Load(ctx context.Context, messageID string) (*Source, error) {
	src := &Source{}
	msg := &src.Msg
	if err := s.DB.NewSelect().Model(msg).Where("id = ?", messageID).Scan(ctx); err != nil {
		return nil, fmt.Errorf("mailstore: read message %s: %w", messageID, err)
	}
	if msg.Raw != nil {
		src.raw = msg.Raw
		src.base = compose.Part{From: address.Address{Name: msg.FromName, Addr: msg.FromAddr}}
		return src, nil
	}
	var atts []AttachmentRow
	if err := s.DB.NewSelect().Model(&atts).Where("message_id = ?", messageID).Order("seq").Scan(ctx); err != nil {
		return nil, fmt.Errorf("mailstore: read attachments: %w", err)
	}
	p := compose.Part{From: address.Address{Name: msg.FromName, Addr: msg.FromAddr}, Subject: msg.Subject, Text: msg.TextBody, HTML: msg.HTMLBody,
		Date: msg.AcceptedAt.UTC()}
	if msg.SendAt != nil && msg.SendAt.After(msg.AcceptedAt) {
		p.Date = msg.SendAt.UTC()
	}
	if err := json.Unmarshal([]byte(msg.Headers), &p.Headers); err != nil {
		return nil, fmt.Errorf("mailstore: message %s headers: %w", msg.ID, err)
	}
	if msg.ReplyTo != "" {
		for _, a0 := range strings.Split(msg.ReplyTo, ", ") {
			a, err := address.Parse(a0)
			if err != nil {
				return nil, err
			}
			p.ReplyTo = append(p.ReplyTo, a)
		}
	}
	for _, a := range atts {
		p.Attach = append(p.Attach, compose.Attachment{Filename: a.Filename, ContentType: a.ContentType, ContentID: a.ContentID, Data: a.Data})
	}
	if msg.Kind == "batch" {
		t, err := compose.ParseTemplates(msg.Subject, msg.TextBody, msg.HTMLBody, s.MaxMessageSize)
		if err != nil {
			return nil, err
		}
		src.tpl = t
	} else {
		var all []RecipientRow
		if err := s.DB.NewSelect().Model(&all).Column("id", "address", "name", "kind").Where("message_id = ?", messageID).Order("seq").Scan(ctx); err != nil {
			return nil, fmt.Errorf("mailstore: read recipients: %w", err)
		}
		if len(all) > 0 {
			// One message for every recipient: the same MIME boundaries,
			// so recipients at one domain can share a transaction.
			p.Boundary = all[0].ID
		}
		for _, x := range all {
			switch x.Kind {
			case "to":
				p.To = append(p.To, address.Address{Name: x.Name, Addr: x.Address})
			case "cc":
				p.Cc = append(p.Cc, address.Address{Name: x.Name, Addr: x.Address})
			}
		}
	}
	src.base = p
	return src, nil
}

// Render builds recipient r's message from the shared source. Every
// recipient of a single message gets the same bytes (Bcc never appear);
// a batch recipient gets its own.
func (src *Source) Render(r RecipientRow) ([]byte, error) {
	if src.raw != nil {
		return bytes.Clone(src.raw), nil
	}
	p := src.base
	p.MsgID = r.RFCMessageID
	if src.tpl != nil {
		p.Boundary = r.ID
		p.To = []address.Address{{Name: r.Name, Addr: r.Address}}
		data, err := DecodeData(r.Data)
		if err != nil {
			return nil, err
		}
		out, err := src.tpl.Render(data)
		if err != nil {
			return nil, err
		}
		p.Subject, p.Text, p.HTML = out.Subject, out.Text, out.HTML
	}
	return compose.Build(p)
}

// DecodeData reads a recipient's stored data. Numbers stay json.Number,
// so 12345678 renders as written, not as 1.2345678e+07.
func DecodeData(s *string) (map[string]any, error) {
	d := map[string]any{}
	if s == nil || *s == "null" {
		return d, nil
	}
	dec := json.NewDecoder(strings.NewReader(*s))
	dec.UseNumber()
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("mailstore: recipient data: %w", err)
	}
	return d, nil
}
