// Package store opens the envios database — PostgreSQL or an embedded SQLite
// file — checks that it is durable, and applies the embedded schema
// migrations under a lock that serialises concurrent nodes.
//
// Every other package receives the *bun.DB (or a bun.IDB inside a
// transaction) from here; nothing else knows how a DSN is interpreted.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	// modernc.org/sqlite (sqlitegate.go) is SQLite translated to Go: `go
	// build` needs no C compiler, so the embedded default works wherever Go
	// does.
)

// Engine names a database engine.
type Engine string

// The supported engines.
const (
	SQLite   Engine = "sqlite"
	Postgres Engine = "postgres"
)

// ErrNotDurable reports a database configured so that a committed
// transaction can be lost in a crash (PostgreSQL fsync or
// synchronous_commit off, SQLite not in WAL with synchronous=FULL).
var ErrNotDurable = errors.New("store: database is not configured for durable commits")

// Config says which database to open.
type Config struct {
	// DSN is a postgres:// or postgresql:// URL, or the path of a SQLite
	// file (created if missing, with its directory). Required.
	DSN string

	// AllowUnsafeDurability opens a database whose durability check fails,
	// logging a warning instead of refusing. Default false: refuse.
	AllowUnsafeDurability bool

	// BusyTimeout is how long a SQLite writer waits for the write lock.
	// Default 10s. Ignored for PostgreSQL.
	BusyTimeout time.Duration

	// MaxOpenConns bounds the connection pool. Default 0: 4 per CPU for
	// PostgreSQL, unlimited for SQLite (readers do not block in WAL mode and
	// writers queue on the busy timeout).
	MaxOpenConns int

	// Logger receives warnings. Default: slog.Default().
	Logger *slog.Logger
}

// EngineOf tells which engine a DSN selects.
func EngineOf(dsn string) Engine {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return Postgres
	}
	return SQLite
}

// Open opens the database named by cfg.DSN and checks its durability
// settings. It does not migrate; call Migrate.
func Open(ctx context.Context, cfg Config) (*bun.DB, error) {
	if cfg.DSN == "" {
		return nil, errors.New("store: no database configured")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	var (
		db  *bun.DB
		err error
	)
	switch EngineOf(cfg.DSN) {
	case Postgres:
		db, err = openPostgres(cfg)
	default:
		db, err = openSQLite(cfg)
	}
	if err != nil {
		return nil, err
	}
	release := func() {}
	if EngineOf(cfg.DSN) == SQLite && !strings.Contains(cfg.DSN, ":memory:") {
		// The first connection to a new file switches it to WAL, which
		// needs an exclusive lock that SQLite does not wait for (it
		// answers SQLITE_BUSY at once, to avoid a deadlock): processes
		// opening one file at the same moment take turns.
		if release, err = lockFile(ctx, cfg.DSN+".open-lock"); err != nil {
			db.Close()
			return nil, err
		}
	}
	err = db.PingContext(ctx)
	release()
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: connect to %s: %w", Describe(cfg.DSN), err)
	}
	if err := checkDurability(ctx, db); err != nil {
		if !cfg.AllowUnsafeDurability || !errors.Is(err, ErrNotDurable) {
			db.Close()
			return nil, err
		}
		log.Warn("DATABASE IS NOT DURABLE: acknowledged mail can be lost in a crash", "err", err)
	}
	return db, nil
}

// openPostgres uses pgx through its database/sql adapter rather than bun's
// pgdriver: pgx is the actively maintained PostgreSQL driver, it gives us
// COPY and LISTEN/NOTIFY on the same connection type when the queue and the
// contact import need them, and its URL parser passes unknown parameters
// (search_path, application_name) through as run-time settings.
func openPostgres(cfg Config) (*bun.DB, error) {
	pc, err := pgx.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("store: bad PostgreSQL URL: %w", err)
	}
	// bun interpolates arguments into the SQL text, so every statement is
	// new to the server: preparing and caching them (pgx's default) costs an
	// extra round trip each and fills the cache with one-off statements.
	// The simple protocol sends each in one round trip.
	pc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	if _, ok := pc.RuntimeParams["application_name"]; !ok {
		pc.RuntimeParams["application_name"] = "envios"
	}
	// The only prepared statements are the fixed, hot ones of
	// QueryCached and QueryIDBCached (key lookups, and the inserts of a
	// group commit that carry their rows in arrays): one generic plan each,
	// made once per connection. PostgreSQL's default would plan each
	// execution again while it weighs custom plans (measured: planning was
	// a quarter of the server's CPU under relay load).
	if _, ok := pc.RuntimeParams["plan_cache_mode"]; !ok {
		pc.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	}
	sqldb := stdlib.OpenDB(*pc)
	n := cfg.MaxOpenConns
	if n == 0 {
		n = 4 * runtime.NumCPU()
	}
	sqldb.SetMaxOpenConns(n)
	sqldb.SetMaxIdleConns(n)
	sqldb.SetConnMaxIdleTime(5 * time.Minute)
	return bun.NewDB(sqldb, pgdialect.New()), nil
}

func openSQLite(cfg Config) (*bun.DB, error) {
	path := cfg.DSN
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("store: SQLite path %q must not contain '?' or '#'", path)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("store: create data directory: %w", err)
		}
	}
	busy := cfg.BusyTimeout
	if busy == 0 {
		busy = 10 * time.Second
	}
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(busy.Milliseconds()))
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL")
	q.Set("_foreign_keys", "1")
	// Every transaction takes the write lock at BEGIN, so two writers queue
	// on the busy timeout instead of one failing with SQLITE_BUSY when it
	// upgrades a read lock.
	q.Set("_txlock", "immediate")
	conn, err := newGatedConnector(path + "?" + q.Encode())
	if err != nil {
		return nil, err
	}
	sqldb := sql.OpenDB(conn)
	if cfg.MaxOpenConns > 0 {
		sqldb.SetMaxOpenConns(cfg.MaxOpenConns)
	}
	return bun.NewDB(sqldb, sqlitedialect.New()), nil
}

// checkDurability verifies that a committed transaction survives a crash.
func checkDurability(ctx context.Context, db *bun.DB) error {
	switch db.Dialect().Name() {
	case dialect.PG:
		for _, setting := range []string{"fsync", "synchronous_commit"} {
			var v string
			if err := db.QueryRowContext(ctx, "SHOW "+setting).Scan(&v); err != nil {
				return fmt.Errorf("store: read %s: %w", setting, err)
			}
			if v == "off" {
				return fmt.Errorf("%w: PostgreSQL %s is off", ErrNotDurable, setting)
			}
		}
	case dialect.SQLite:
		var mode string
		if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
			return fmt.Errorf("store: read journal_mode: %w", err)
		}
		var sync int
		if err := db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
			return fmt.Errorf("store: read synchronous: %w", err)
		}
		if !strings.EqualFold(mode, "wal") {
			return fmt.Errorf("%w: SQLite journal_mode is %s, want wal", ErrNotDurable, mode)
		}
		if sync < 2 {
			return fmt.Errorf("%w: SQLite synchronous is %d, want 2 (FULL)", ErrNotDurable, sync)
		}
	}
	return nil
}

// EngineOfDB tells which engine an open database runs on.
func EngineOfDB(db *bun.DB) Engine {
	if db.Dialect().Name() == dialect.PG {
		return Postgres
	}
	return SQLite
}

// Describe renders a DSN for logs and messages without its password.
func Describe(dsn string) string {
	if EngineOf(dsn) == SQLite {
		return "sqlite " + dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres (unparseable URL)"
	}
	return "postgres " + u.Redacted()
}

// QueryRowCached runs a hot, fixed query (written with ? placeholders) with
// its arguments bound, not interpolated: on PostgreSQL as a prepared
// statement cached per connection, with one generic plan (openPostgres),
// on SQLite as usual. For the per-command checks of the relay; everything
// else goes through bun, but for QueryIDBCached.
func QueryRowCached(ctx context.Context, db *bun.DB, query string, args ...any) *sql.Row {
	if EngineOfDB(db) != Postgres {
		return db.DB.QueryRowContext(ctx, query, args...)
	}
	query, args = cached(query, args)
	return db.DB.QueryRowContext(ctx, query, args...)
}

// QueryCached is QueryRowCached for several rows.
func QueryCached(ctx context.Context, db *bun.DB, query string, args ...any) (*sql.Rows, error) {
	if EngineOfDB(db) != Postgres {
		return db.DB.QueryContext(ctx, query, args...)
	}
	return QueryIDBCached(ctx, db, query, args...)
}

// QueryIDBCached is QueryCached on PostgreSQL only, on any bun.IDB (a
// *bun.DB, a bun.Tx or a bun.Conn, or a pointer to either): for the fixed
// statements of a group commit, which carry their rows in array arguments
// so that one prepared statement serves every group.
func QueryIDBCached(ctx context.Context, idb bun.IDB, query string, args ...any) (*sql.Rows, error) {
	var q interface {
		QueryContext(context.Context, string, ...any) (*sql.Rows, error)
	}
	switch t := idb.(type) {
	case bun.Tx:
		q = t.Tx
	case *bun.Tx:
		q = t.Tx
	case *bun.DB:
		q = t.DB
	case bun.Conn:
		q = t.Conn
	case *bun.Conn:
		q = t.Conn
	default:
		return nil, fmt.Errorf("store: no database/sql handle in %T", idb)
	}
	query, args = cached(query, args)
	return q.QueryContext(ctx, query, args...)
}

// cached is query with PostgreSQL's $1, $2, … for its ? placeholders, and
// args led by pgx's QueryExecModeCacheStatement, their strings (alone or in
// slices, as arrays) made valid UTF-8 as bun makes them when it writes them
// into SQL: PostgreSQL refuses other octets in text. The callers validate
// what they store; this is the backstop.
func cached(query string, args []any) (string, []any) {
	b := make([]byte, 0, len(query)+16)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b = append(b, '$')
			b = strconv.AppendInt(b, int64(n), 10)
			continue
		}
		b = append(b, query[i])
	}
	out := make([]any, 0, len(args)+1)
	out = append(out, pgx.QueryExecModeCacheStatement)
	for _, a := range args {
		switch v := a.(type) {
		case string:
			a = validText(v)
		case []string:
			a = validTexts(v)
		case []*string:
			a = validTextPtrs(v)
		}
		out = append(out, a)
	}
	return string(b), out
}

func validText(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// validTexts returns ss, or a copy with its invalid strings made valid.
func validTexts(ss []string) []string {
	for i, s := range ss {
		if !utf8.ValidString(s) {
			out := slices.Clone(ss)
			for j := i; j < len(out); j++ {
				out[j] = validText(out[j])
			}
			return out
		}
	}
	return ss
}

func validTextPtrs(ss []*string) []*string {
	for i, s := range ss {
		if s != nil && !utf8.ValidString(*s) {
			out := slices.Clone(ss)
			for j := i; j < len(out); j++ {
				if out[j] != nil {
					v := validText(*out[j])
					out[j] = &v
				}
			}
			return out
		}
	}
	return ss
}
