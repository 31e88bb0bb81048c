// Package mailstore is the stored side of a message, shared by acceptance
// (mailing), delivery (mailing/delivery) and the reports: the rows of
// mail_messages and mail_recipients, the recipient statuses and the one
// place that changes them (lifecycle.go), the events and hourly counters
// written with each change (counters.go), and the loading and rendering
// of a stored message for one recipient (source.go).
package mailstore

import (
	"log/slog"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/servir-pe/envios/internal/dkimkey"
	"github.com/servir-pe/envios/quota"
)

// Store is what acceptance and delivery share: the database, the ledger
// they charge and release, the sealer of keys and secrets, the clock and
// the logger. mailing.Mailer makes one; its zero value is not usable.
type Store struct {
	DB     *bun.DB
	Ledger *quota.Ledger
	Sealer *dkimkey.Sealer // nil: keys and secrets in clear
	Clock  func() time.Time
	Logger *slog.Logger
	// MaxMessageSize bounds what a batch recipient's templates may render.
	MaxMessageSize int
}

// Now is the store's clock in UTC.
func (s *Store) Now() time.Time { return s.Clock().UTC() }

// IsPG reports whether db is PostgreSQL.
func IsPG(db bun.IDB) bool { return db.Dialect().Name() == dialect.PG }

// Truncate cuts s to at most n bytes.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
