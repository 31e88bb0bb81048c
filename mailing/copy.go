package mailing

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
)

func isPG(db *bun.DB) bool { return db.Dialect().Name() == dialect.PG }

var copyColumns = []string{"message_id", "seq", "account_id", "origin", "kind", "address", "name", "data",
	"rfc_message_id", "status", "priority", "due_at", "accepted_at"}

// copyRecipients stores rows with PostgreSQL's COPY, inside the
// transaction open on conn: several times faster than a multi-row INSERT
// for a chunk of thousands. A row that already exists fails the whole COPY
// with errCopyConflict (the caller retries with INSERT … ON CONFLICT).
func copyRecipients(ctx context.Context, conn bun.Conn, rows []recipientRow) (int64, error) {
	var n int64
	err := conn.Raw(func(driverConn any) error {
		sc, ok := driverConn.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("mailing: COPY needs a pgx connection, have %T", driverConn)
		}
		var err error
		n, err = sc.Conn().CopyFrom(ctx, pgx.Identifier{"mail_recipients"}, copyColumns,
			pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
				r := &rows[i]
				return []any{r.MessageID, r.Seq, r.AccountID, string(r.Origin), r.Kind, r.Address, r.Name, r.Data,
					r.RFCMessageID, string(r.Status), r.Priority, r.DueAt, r.AcceptedAt}, nil
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

// copyMessages stores rows with PostgreSQL's COPY (binary: a submitted
// message's bytes are sent as they are), inside the transaction open on
// conn.
func copyMessages(ctx context.Context, conn bun.Conn, rows []messageRow) error {
	if len(rows) == 0 {
		return nil
	}
	var n int64
	err := conn.Raw(func(driverConn any) error {
		sc, ok := driverConn.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("COPY needs a pgx connection, have %T", driverConn)
		}
		var err error
		n, err = sc.Conn().CopyFrom(ctx, pgx.Identifier{"mail_messages"}, messageColumns,
			pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
				r := &rows[i]
				return []any{r.ID, r.AccountID, string(r.Origin), r.Actor, r.Kind, r.Priority, r.Campaign, r.FromAddr, r.FromName,
					r.ReplyTo, r.Subject, r.TextBody, r.HTMLBody, r.Headers, r.IdempotencyKey, r.SendAt, r.AcceptedAt, int32(r.Recipients), r.Raw}, nil
			}))
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
