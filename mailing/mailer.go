package mailing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/audit"
	"github.com/servir-pe/envios/internal/dkimkey"
	"github.com/servir-pe/envios/internal/mailerr"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/quota"
)

// Config configures a Mailer. Only DB is required; every other zero value
// has the default its comment states.
type Config struct {
	// DB is the migrated envios database (see Open for opening one by DSN).
	DB *bun.DB

	// MessageIDDomain is the right-hand side of generated Message-IDs,
	// normally the dedicated sending domain. Default "envios.invalid".
	MessageIDDomain string

	// MaxRecipients bounds the recipients of one Send. Default 1,000.
	MaxRecipients int

	// MaxMessageSize bounds a message's bodies and attachments, in bytes,
	// before transfer encoding. Default 25 MB.
	MaxMessageSize int

	// ChunkSize is how many batch recipients commit together with their
	// charge. Default 5,000 (measured: fewer, bigger transactions are
	// faster, and 5,000 keeps a million-recipient batch under 100 MB).
	ChunkSize int

	// UnsignedDomains are From domains that may be accepted without a DKIM
	// key. Default none: mail from a domain with no key (relayd domain add)
	// is refused with ErrNoDKIMKey, never sent unsigned silently.
	UnsignedDomains []string

	// DKIMKeyFile is a key file (relayd domain keyfile) that seals DKIM
	// private keys, and the secret of the return-path and unsubscribe
	// tokens, in the database: what is created with it is stored
	// encrypted, and what is sealed is opened with it. Default none:
	// stored in clear, and a sealed key or secret cannot be used.
	DKIMKeyFile string

	// Committers is how many batch chunks may commit at once. Default 2.
	Committers int

	// GroupCommitters is how many group transactions of Send and Submit
	// may run at once; each takes every message queued while the others
	// commit. Default 1: the next group gathers while one commits, and
	// fewer, larger groups cost the database fewer statements (on 2 cores,
	// 1 against 2: 2,352 against 2,024 sends/s on PostgreSQL, 4,341
	// against 3,473 on SQLite, whose writers take turns anyway).
	GroupCommitters int

	// Now is the clock. Default time.Now.
	Now func() time.Time

	// NewID returns a new message id. Default: UUIDv7 (time-ordered).
	NewID func() string

	// Logger receives operational messages. Default slog.Default().
	Logger *slog.Logger
}

// Mailer accepts mail for delivery: it validates, charges the message pool
// and stores each message with one row per recipient, all in one
// transaction. It is safe for concurrent use. Two Mailers never share
// state except through their databases.
type Mailer struct {
	cfg    Config
	st     *mailstore.Store // what acceptance and delivery share
	sealer *dkimkey.Sealer  // nil: DKIM keys in clear
	db     *bun.DB
	ledger *quota.Ledger
	ownDB  bool

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup

	gmu     sync.Mutex // group commit (commit.go)
	gcond   *sync.Cond
	gqueue  []*pending
	gactive int
}

// New returns a Mailer on cfg.DB, which must be migrated.
func New(cfg Config) (*Mailer, error) {
	if cfg.DB == nil {
		return nil, errors.New("mailing: Config.DB is required")
	}
	if cfg.MessageIDDomain == "" {
		cfg.MessageIDDomain = "envios.invalid"
	}
	if cfg.MaxRecipients <= 0 {
		cfg.MaxRecipients = 1000
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = 25 << 20
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = 5000
	}
	if cfg.Committers <= 0 {
		cfg.Committers = 2
	}
	if cfg.GroupCommitters <= 0 {
		cfg.GroupCommitters = 1
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewID == nil {
		cfg.NewID = func() string { return uuid.Must(uuid.NewV7()).String() }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Mailer{cfg: cfg, db: cfg.DB, ledger: quota.New(cfg.DB, quota.Config{Now: cfg.Now})}
	if cfg.DKIMKeyFile != "" {
		s, err := dkimkey.OpenKeyFile(cfg.DKIMKeyFile)
		if err != nil {
			return nil, err
		}
		m.sealer = s
	}
	m.st = &mailstore.Store{DB: m.db, Ledger: m.ledger, Sealer: m.sealer, Clock: cfg.Now, Logger: cfg.Logger, MaxMessageSize: cfg.MaxMessageSize}
	m.gcond = sync.NewCond(&m.gmu)
	return m, nil
}

// Open opens the database named by dsn (a postgres:// URL or a SQLite file
// path), applies pending migrations, and returns a Mailer that closes the
// database on Close. cfg.DB must be nil.
func Open(ctx context.Context, dsn string, cfg Config) (*Mailer, error) {
	if cfg.DB != nil {
		return nil, errors.New("mailing: Open with Config.DB set; use New")
	}
	db, err := store.Open(ctx, store.Config{DSN: dsn, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if _, err := store.Migrate(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	cfg.DB = db
	m, err := New(cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	m.ownDB = true
	return m, nil
}

// Ledger is the message-pool ledger the Mailer charges.
func (m *Mailer) Ledger() *quota.Ledger { return m.ledger }

// DB is the database the mailer stores in, for the packages that keep
// their own tables beside it (mailing/contacts, mailing/campaign).
func (m *Mailer) DB() *bun.DB { return m.db }

// enter registers a call in flight; it fails once the Mailer is closing.
func (m *Mailer) enter() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return mailerr.New(ErrClosed, "", "the mailer is closed")
	}
	m.inflight.Add(1)
	return nil
}

// Shutdown refuses new calls and waits for those in flight to return (each
// has either committed or rolled back), or for ctx to end. It closes the
// database if Open opened it.
func (m *Mailer) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	done := make(chan struct{})
	go func() { m.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if m.ownDB {
		return m.db.Close()
	}
	return nil
}

// Close is Shutdown without a deadline.
func (m *Mailer) Close() error { return m.Shutdown(context.Background()) }

func (m *Mailer) now() time.Time { return m.cfg.Now().UTC() }

// Sender is an identity an account may send as: an address
// ("avisos@servir.gob.pe") or a whole domain ("@servir.gob.pe").
type Sender struct {
	Account string
	Pattern string
	Created time.Time
}

// AddDomainKey generates a DKIM key for domain ("rsa2048" or "ed25519"),
// stores it, and returns the DNS TXT record to publish (name and value).
// The private key never leaves the database.
func (m *Mailer) AddDomainKey(ctx context.Context, domain, algorithm string) (name, value string, err error) {
	k, err := dkimkey.Add(ctx, m.db, m.sealer, domain, "", dkimkey.Algorithm(algorithm), m.now())
	if err != nil {
		return "", "", err
	}
	name, value = k.Record()
	return name, value, nil
}

// normaliseSender checks and lowercases an address or @domain pattern.
func normaliseSender(pattern string) (string, error) {
	p := strings.TrimSpace(pattern)
	if strings.HasPrefix(p, "@") {
		a, err := ParseAddress("postmaster" + p)
		if err != nil {
			return "", mailerr.New(ErrAddress, "pattern", "sender domain %q is not a valid domain", pattern)
		}
		return "@" + a.Domain(), nil
	}
	a, err := ParseAddress(p)
	if err != nil {
		return "", err
	}
	if a.Name != "" {
		return "", mailerr.New(ErrAddress, "pattern", "a sender identity is a bare address or @domain, not %q", pattern)
	}
	return strings.ToLower(a.Addr), nil
}

type accountRef struct {
	ID       int64
	Name     string
	Disabled bool
}

func (m *Mailer) accountRef(ctx context.Context, idb bun.IDB, name string) (accountRef, error) {
	n, _, err := quota.ParseAccountName(name)
	if err != nil {
		return accountRef{}, err
	}
	var rows []accountRef
	if err := idb.NewRaw("SELECT id, name, disabled FROM quota_accounts WHERE name = ?", n).Scan(ctx, &rows); err != nil {
		return accountRef{}, fmt.Errorf("mailing: read account: %w", err)
	}
	if len(rows) == 0 {
		return accountRef{}, noAccount(n)
	}
	return rows[0], nil
}

// AddSender lets account send as pattern (an address or "@domain").
// Adding one that exists changes nothing and reports false.
func (m *Mailer) AddSender(ctx context.Context, account, pattern, actor string) (bool, error) {
	added, err := m.addSender(ctx, account, pattern, actor)
	return added, refusal(err)
}

func (m *Mailer) addSender(ctx context.Context, account, pattern, actor string) (bool, error) {
	p, err := normaliseSender(pattern)
	if err != nil {
		return false, err
	}
	added := false
	err = m.write(ctx, "add sender", func(ctx context.Context, tx bun.Tx, _ *bun.Conn) error {
		added = false // a try may run again
		a, err := m.accountRef(ctx, tx, account)
		if err != nil {
			return err
		}
		now := m.now()
		res, err := tx.NewRaw("INSERT INTO mail_senders (account_id, pattern, created_at) VALUES (?, ?, ?) ON CONFLICT (account_id, pattern) DO NOTHING",
			a.ID, p, now).Exec(ctx)
		if err != nil {
			return fmt.Errorf("mailing: add sender: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		added = true
		return audit.Record(ctx, tx, audit.Event{At: now, Actor: actor, Action: "sender.add", Subject: a.Name, Detail: p})
	})
	return added, err
}

// RemoveSender withdraws a sender identity; removing one that does not
// exist is ErrNotFound.
func (m *Mailer) RemoveSender(ctx context.Context, account, pattern, actor string) error {
	return refusal(m.removeSender(ctx, account, pattern, actor))
}

func (m *Mailer) removeSender(ctx context.Context, account, pattern, actor string) error {
	p, err := normaliseSender(pattern)
	if err != nil {
		return err
	}
	return m.write(ctx, "remove sender", func(ctx context.Context, tx bun.Tx, _ *bun.Conn) error {
		a, err := m.accountRef(ctx, tx, account)
		if err != nil {
			return err
		}
		res, err := tx.NewRaw("DELETE FROM mail_senders WHERE account_id = ? AND pattern = ?", a.ID, p).Exec(ctx)
		if err != nil {
			return fmt.Errorf("mailing: remove sender: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return mailerr.Wrap(quota.ErrNotFound, "pattern", quota.ErrNotFound, fmt.Sprintf("%s has no sender identity %s", a.Name, p))
		}
		return audit.Record(ctx, tx, audit.Event{At: m.now(), Actor: actor, Action: "sender.remove", Subject: a.Name, Detail: p})
	})
}

// Senders lists the sender identities of account, or of every account
// when account is empty.
func (m *Mailer) Senders(ctx context.Context, account string) ([]Sender, error) {
	s, err := m.senders(ctx, account)
	return s, refusal(err)
}

func (m *Mailer) senders(ctx context.Context, account string) ([]Sender, error) {
	q := m.db.NewSelect().TableExpr("mail_senders AS s").
		ColumnExpr("a.name AS account, s.pattern, s.created_at AS created").
		Join("JOIN quota_accounts AS a ON a.id = s.account_id").
		Order("a.name", "s.pattern")
	if account != "" {
		ref, err := m.accountRef(ctx, m.db, account)
		if err != nil {
			return nil, err
		}
		q = q.Where("s.account_id = ?", ref.ID)
	}
	var out []Sender
	if err := q.Scan(ctx, &out); err != nil {
		return nil, fmt.Errorf("mailing: list senders: %w", err)
	}
	for i := range out {
		out[i].Created = out[i].Created.UTC()
	}
	return out, nil
}

// senderAllowed reports whether accountID may send as addr.
func senderAllowed(ctx context.Context, idb bun.IDB, accountID int64, addr string) (bool, error) {
	exact, domain := senderPatterns(addr)
	var n int
	err := idb.NewRaw("SELECT count(*) FROM mail_senders WHERE account_id = ? AND pattern IN (?, ?)",
		accountID, exact, domain).Scan(ctx, &n)
	if err != nil {
		return false, fmt.Errorf("mailing: check sender: %w", err)
	}
	return n > 0, nil
}

// senderPatterns are the two identities that let an account send as addr:
// the address itself and its "@domain", lower-cased as stored.
func senderPatterns(addr string) (exact, domain string) {
	exact = strings.ToLower(addr)
	return exact, exact[strings.LastIndexByte(exact, '@'):]
}

// MaySend checks that account exists, is enabled and may send as addr:
// nil, or ErrSenderNotAllowed, quota.ErrNotFound, quota.ErrDisabled,
// ErrAddress. The relay asks at MAIL FROM, before any data is sent.
func (m *Mailer) MaySend(ctx context.Context, account, addr string) error {
	a, err := ParseAddress(addr)
	if err != nil {
		return mailerr.In("from", err)
	}
	return refusal(store.RetryConnLost(ctx, m.db, func() error { return m.maySend(ctx, account, a) }))
}

func (m *Mailer) maySend(ctx context.Context, account string, a Address) error {
	acct, err := m.accountRef(ctx, m.db, account)
	if err != nil {
		return err
	}
	if acct.Disabled {
		return disabled(acct.Name)
	}
	ok, err := senderAllowed(ctx, m.db, acct.ID, a.Addr)
	if err != nil {
		return err
	}
	if !ok {
		return senderNotAllowed(acct.Name, a.Addr)
	}
	return nil
}

// MaySendSigned is MaySend plus the check acceptance makes of the From
// domain: mail from addr is signed, its domain having a DKIM key here (or
// being one of Config.UnsignedDomains), else ErrNoDKIMKey. A campaign asks
// it when it is saved and started, rather than fail when its recipients
// are stored.
func (m *Mailer) MaySendSigned(ctx context.Context, account, addr string) error {
	a, err := ParseAddress(addr)
	if err != nil {
		return mailerr.In("from", err)
	}
	return refusal(store.RetryConnLost(ctx, m.db, func() error {
		_, err := newChecker(m, m.db).check(ctx, common{account: account, from: a}, nil)
		return err
	}))
}

// Ping checks that the database answers.
func (m *Mailer) Ping(ctx context.Context) error { return m.db.PingContext(ctx) }
