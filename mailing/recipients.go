package mailing

import (
	"context"
	"fmt"
	"strings"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailerr"
	"github.com/servir-pe/envios/internal/mailstore"
)

// recipientIn is one recipient of a message being accepted.
type recipientIn struct {
	addr Address
	kind string // to, cc, bcc
}

// recipients gathers a message's recipients with one copy per mailbox
// (compared case-insensitively), as an MTA would; Send and Submit share it.
type recipients struct {
	seen map[string]bool
	list []recipientIn
}

// add adds a unless its mailbox is already there.
func (rs *recipients) add(a Address, kind string) {
	if rs.seen == nil {
		rs.seen = map[string]bool{}
	}
	if k := strings.ToLower(a.Addr); !rs.seen[k] {
		rs.seen[k] = true
		rs.list = append(rs.list, recipientIn{a, kind})
	}
}

// check refuses no recipient at all and more than MaxRecipients; field
// names the input they came in.
func (rs *recipients) check(field string, most int) error {
	if len(rs.list) == 0 {
		return mailerr.New(ErrNoRecipients, field, "a message needs at least one recipient")
	}
	if len(rs.list) > most {
		return mailerr.New(ErrTooManyRecipients, field, "%d, the limit is %d", len(rs.list), most)
	}
	return nil
}

// keyed is what an earlier call stored under an idempotency key.
type keyed struct {
	id         string
	recipients int
	cancelled  bool
}

// byKey is the one idempotency lookup: the message account stored with
// key, if any (ok false: none). The group commit, SendBatch and a batch's
// first chunk all ask it, inside their transaction or before it.
func byKey(ctx context.Context, idb bun.IDB, accountID int64, key string) (k keyed, ok bool, err error) {
	var rows []mailstore.MessageRow
	if err := idb.NewSelect().Model(&rows).Column("id", "recipients", "cancelled_at").
		Where("account_id = ? AND idempotency_key = ?", accountID, key).Scan(ctx); err != nil {
		return keyed{}, false, fmt.Errorf("mailing: read message by idempotency key: %w", err)
	}
	if len(rows) == 0 {
		return keyed{}, false, nil
	}
	return keyed{id: rows[0].ID, recipients: rows[0].Recipients, cancelled: rows[0].CancelledAt != nil}, true, nil
}

// extras is a stored message's tags and attachments.
type extras struct {
	id string
	c  *common
}

// insertExtras stores the tags and attachments of messages, with one
// statement for each kind.
func insertExtras(ctx context.Context, idb bun.IDB, msgs ...extras) error {
	var tags []mailstore.TagRow
	var atts []mailstore.AttachmentRow
	for _, x := range msgs {
		for _, t := range x.c.tags {
			tags = append(tags, mailstore.TagRow{MessageID: x.id, Tag: t})
		}
		for i, a := range x.c.attach {
			atts = append(atts, mailstore.AttachmentRow{MessageID: x.id, Seq: i, Filename: a.Filename, ContentType: a.ContentType, ContentID: a.ContentID, Data: a.Data})
		}
	}
	if len(tags) > 0 {
		if _, err := idb.NewInsert().Model(&tags).Exec(ctx); err != nil {
			return fmt.Errorf("mailing: store tags: %w", err)
		}
	}
	if len(atts) > 0 {
		if _, err := idb.NewInsert().Model(&atts).Exec(ctx); err != nil {
			return fmt.Errorf("mailing: store attachments: %w", err)
		}
	}
	return nil
}
