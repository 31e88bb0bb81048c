package mailstore

import (
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/quota"
)

// Status is where a recipient stands.
type Status string

// The recipient statuses (DESIGN.md §3).
const (
	StatusQueued     Status = "queued"
	StatusScheduled  Status = "scheduled"
	StatusSending    Status = "sending"
	StatusDeferred   Status = "deferred"
	StatusSent       Status = "sent"
	StatusBounced    Status = "bounced"
	StatusFailed     Status = "failed"
	StatusSuppressed Status = "suppressed"
	StatusCancelled  Status = "cancelled"
)

// The events of mail_events that are not statuses: feedback after a
// delivery.
const (
	EventDelayed      Status = "delayed"      // a DSN with Action: delayed
	EventComplained   Status = "complained"   // an ARF or JMRP complaint
	EventUnsubscribed Status = "unsubscribed" // one-click, the confirmation page or mail to u+TOKEN@
)

// Database rows (migrations/…_mailing.tx.up.sql).

// MessageRow is a row of mail_messages.
type MessageRow struct {
	bun.BaseModel  `bun:"table:mail_messages,alias:msg"`
	ID             string `bun:",pk"`
	AccountID      int64
	Origin         quota.Origin
	Actor          string
	Kind           string
	Priority       int16
	Campaign       string
	FromAddr       string
	FromName       string
	ReplyTo        string
	Subject        string
	TextBody       *string
	HTMLBody       *string `bun:"html_body"`
	Headers        string
	IdempotencyKey *string
	SendAt         *time.Time
	AcceptedAt     time.Time
	Recipients     int
	CancelledAt    *time.Time
	PausedAt       *time.Time // set while its recipients are held (Mailer.Pause)
	Raw            []byte     // set for a message submitted whole (Submit)
}

// RecipientRow is a row of mail_recipients: the queue and the permanent log.
type RecipientRow struct {
	bun.BaseModel `bun:"table:mail_recipients,alias:r"`
	ID            int64 `bun:",pk,autoincrement"`
	MessageID     string
	Seq           int
	AccountID     int64
	Origin        quota.Origin
	Kind          string
	Address       string
	Name          string
	Data          *string
	RFCMessageID  string `bun:"rfc_message_id"`
	Status        Status
	Priority      int16
	DueAt         time.Time
	AcceptedAt    time.Time
	Attempts      int
	LastAttemptAt *time.Time
	FinalAt       *time.Time
	RemoteHost    string
	Reply         string
	SuppressedBy  *int64 // the mail_suppressions row that stopped it
}

// TagRow is a row of mail_tags.
type TagRow struct {
	bun.BaseModel `bun:"table:mail_tags"`
	MessageID     string
	Tag           string
}

// AttachmentRow is a row of mail_attachments.
type AttachmentRow struct {
	bun.BaseModel `bun:"table:mail_attachments"`
	MessageID     string
	Seq           int
	Filename      string
	ContentType   string
	ContentID     string
	Data          []byte
}

// InboundRow is one message the MX of the sending domain accepted for one
// of its recipients (mail_inbound), kept permanently: its first 256 KiB,
// its size and SHA-256, the envelope, and what reading it found. Kind is
// empty until the message has been processed.
type InboundRow struct {
	bun.BaseModel `bun:"table:mail_inbound,alias:ib"`
	ID            int64     `bun:"id,pk,autoincrement"`
	ReceivedAt    time.Time `bun:"received_at"`
	RemoteAddr    string    `bun:"remote_addr"`
	Helo          string    `bun:"helo"`
	MailFrom      string    `bun:"mail_from"`
	Rcpt          string    `bun:"rcpt"`
	Mailbox       string    `bun:"mailbox"`
	RecipientID   *int64    `bun:"recipient_id"`
	Size          int64     `bun:"size"`
	SHA256        string    `bun:"sha256"`
	Raw           []byte    `bun:"raw"`
	Truncated     bool      `bun:"truncated"`
	Kind          string    `bun:"kind"`
	Result        string    `bun:"result"`
}
