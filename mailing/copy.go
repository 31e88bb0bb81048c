package mailing

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/store"
	"github.com/uptrace/bun"
)

var copyColumns = []string{"message_id", "seq", "account_id", "origin", "kind", "address", "name", "data",
	"rfc_message_id", "status", "priority", "due_at", "accepted_at", "final_at", "reply", "suppressed_by"}

// copyRecipients stores rows with PostgreSQL's COPY, inside the
// transaction open on conn: several times faster than a multi-row INSERT
// for a chunk of thousands. A row that already exists fails the whole COPY
// with errCopyConflict (the caller retries with INSERT … ON CONFLICT).
func copyRecipients(ctx context.Context, conn bun.Conn, rows []mailstore.RecipientRow) (int64, error) {
	var n int64
	err := store.WithPgx(conn, func(pc *pgx.Conn) error {
		var err error
		n, err = pc.CopyFrom(ctx, pgx.Identifier{"mail_recipients"}, copyColumns,
			pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
				r := &rows[i]
				return []any{r.MessageID, r.Seq, r.AccountID, string(r.Origin), r.Kind, r.Address, r.Name, r.Data,
					r.RFCMessageID, string(r.Status), r.Priority, r.DueAt, r.AcceptedAt, r.FinalAt, r.Reply, r.SuppressedBy}, nil
			}))
		return err
	})
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return 0, errCopyConflict
	}
	if err != nil {
		return 0, fmt.Errorf("mailing: store recipients: %w", err)
	}
	return n, nil
}

// messageColumns are the columns of mail_messages that copyMessages
// writes (cancelled_at is left NULL).
var messageColumns = []string{"id", "account_id", "origin", "actor", "kind", "priority", "campaign", "from_addr", "from_name",
	"reply_to", "subject", "text_body", "html_body", "headers", "idempotency_key", "send_at", "accepted_at", "recipients", "raw"}

// copyMessages stores rows with PostgreSQL's COPY, inside the transaction
// open on conn, in COPY's binary format (a submitted message's bytes are
// sent as they are). The rows are encoded here, for messageColumns' types,
// rather than by pgx's CopyFrom, which first asks the server for the
// columns' types: a round trip per group commit.
func copyMessages(ctx context.Context, conn bun.Conn, rows []mailstore.MessageRow) error {
	if len(rows) == 0 {
		return nil
	}
	data := encodeMessages(rows)
	var n int64
	err := store.WithPgx(conn, func(pc *pgx.Conn) error {
		tag, err := pc.PgConn().CopyFrom(ctx, bytes.NewReader(data),
			"COPY mail_messages ("+strings.Join(messageColumns, ", ")+") FROM STDIN (FORMAT binary)")
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("mailing: store messages: %w", err)
	}
	if n != int64(len(rows)) {
		return fmt.Errorf("mailing: store messages: COPY stored %d of %d", n, len(rows))
	}
	return nil
}

// pgEpoch is where PostgreSQL's binary timestamps count from.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// encodeMessages is rows in COPY's binary format (PostgreSQL's manual,
// "COPY", Binary Format): a header, then per row the field count and each
// field as a 32-bit length (-1 for NULL) and its binary value: text as its
// bytes, bigint/integer/smallint big-endian, timestamptz as microseconds
// since 2000-01-01 UTC, bytea as its bytes.
func encodeMessages(rows []mailstore.MessageRow) []byte {
	size := 19 + 2
	for i := range rows {
		size += 2 + 4*len(messageColumns) + 256 + len(rows[i].Raw) + len(rows[i].Headers)
	}
	b := make([]byte, 0, size)
	b = append(b, "PGCOPY\n\xff\r\n\x00"...)
	b = binary.BigEndian.AppendUint32(b, 0) // flags
	b = binary.BigEndian.AppendUint32(b, 0) // header extension
	field := func(v []byte) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	text := func(v string) {
		// As bun does when it writes a string into SQL: an octet that is
		// not UTF-8 becomes U+FFFD (PostgreSQL refuses it in text; the
		// callers validate or clean what they store, this is the backstop).
		v = strings.ToValidUTF8(v, "\uFFFD")
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	null := func() { b = binary.BigEndian.AppendUint32(b, 0xffffffff) }
	optText := func(v *string) {
		if v == nil {
			null()
		} else {
			text(*v)
		}
	}
	stamp := func(t time.Time) {
		b = binary.BigEndian.AppendUint32(b, 8)
		b = binary.BigEndian.AppendUint64(b, uint64(t.Sub(pgEpoch).Microseconds()))
	}
	for i := range rows {
		r := &rows[i]
		b = binary.BigEndian.AppendUint16(b, uint16(len(messageColumns)))
		text(r.ID)
		b = binary.BigEndian.AppendUint32(b, 8)
		b = binary.BigEndian.AppendUint64(b, uint64(r.AccountID))
		text(string(r.Origin))
		text(r.Actor)
		text(r.Kind)
		b = binary.BigEndian.AppendUint32(b, 2)
		b = binary.BigEndian.AppendUint16(b, uint16(r.Priority))
		text(r.Campaign)
		text(r.FromAddr)
		text(r.FromName)
		text(r.ReplyTo)
		text(r.Subject)
		optText(r.TextBody)
		optText(r.HTMLBody)
		text(r.Headers)
		optText(r.IdempotencyKey)
		if r.SendAt == nil {
			null()
		} else {
			stamp(*r.SendAt)
		}
		stamp(r.AcceptedAt)
		b = binary.BigEndian.AppendUint32(b, 4)
		b = binary.BigEndian.AppendUint32(b, uint32(int32(r.Recipients)))
		if r.Raw == nil {
			null()
		} else {
			field(r.Raw)
		}
	}
	return binary.BigEndian.AppendUint16(b, 0xffff) // trailer
}
