package contacts

import (
	"context"
	"fmt"
	"hash/maphash"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/servir-pe/envios/internal/store"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
)

func isPG(db bun.IDB) bool { return db.Dialect().Name() == dialect.PG }

// The staging table: one row per row of the file. contact_id, cstatus and
// same describe the existing contact of the address; member its
// membership of the list (” none, subscribed, unsubscribed). attrs is
// the attrs column's type (PostgreSQL: jsonb, parsed by the COPY while
// the file is still being read).
const stageColumns = `line BIGINT NOT NULL, address TEXT NOT NULL, name TEXT NOT NULL, attrs %s NOT NULL, raw TEXT NOT NULL,
	reject TEXT NOT NULL, contact_id BIGINT, cstatus TEXT NOT NULL DEFAULT '', same BOOLEAN NOT NULL DEFAULT FALSE,
	member TEXT NOT NULL DEFAULT ''`

func createStage(ctx context.Context, tx bun.Tx, pg bool) error {
	stmts := []string{"DROP TABLE IF EXISTS temp.import_stage", "CREATE TEMP TABLE import_stage (" + fmt.Sprintf(stageColumns, "TEXT") + ")"}
	if pg {
		stmts = []string{"CREATE TEMP TABLE import_stage (" + fmt.Sprintf(stageColumns, "JSONB") + ") ON COMMIT DROP"}
	}
	for _, q := range stmts {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("contacts: staging table: %w", err)
		}
	}
	return nil
}

// staged is what staging learnt of the rows on their way to the table.
type staged struct {
	rows, rejected int64 // staged; rejected already (unreadable, no valid address)
	// twice: two valid rows may have the same address. When false, none
	// have, and the check for duplicates in the file is skipped.
	twice bool
	seen  *addressSet // the valid rows' addresses until twice
}

func newStaged() *staged { return &staged{seen: newAddressSet()} }

func (st *staged) add(r *stageRow) {
	st.rows++
	switch {
	case r.reject != "":
		st.rejected++
	case !st.twice && !st.seen.add(r.address):
		st.twice, st.seen = true, nil
	}
}

// end is what was learnt, without the addresses.
func (st *staged) end() staged {
	r := *st
	r.seen = nil
	return r
}

// addressSet tells whether an address may have been added before. For
// each address it keeps 31 bits of a 64-bit hash in a table of 2²¹
// slots (8 MB) at the slot that 21 other bits of the hash name, or the
// next free one. A repeat — the same
// address, or by chance another one in the same run of slots (about
// once in a thousand files of a million addresses) — or a table three
// quarters full only costs the exact check in SQL; no repeat proves
// there is no duplicate.
type addressSet struct {
	seed   maphash.Seed
	hashes []uint32 // linear probing; 0 is an empty slot
	n      int
}

const addressSlots = 1 << 21

func newAddressSet() *addressSet {
	return &addressSet{seed: maphash.MakeSeed(), hashes: make([]uint32, addressSlots)}
}

// add adds address, false if it may be there already.
func (s *addressSet) add(address string) bool {
	if 4*(s.n+1) > 3*addressSlots {
		return false
	}
	h := maphash.String(s.seed, address)
	v := uint32(h>>32) | 1
	for i := h % addressSlots; ; i = (i + 1) % addressSlots {
		switch s.hashes[i] {
		case 0:
			s.hashes[i] = v
			s.n++
			return true
		case v:
			return false
		}
	}
}

var stageCopyColumns = []string{"line", "address", "name", "attrs", "raw", "reject"}

// copyStage streams the rows into the staging table with COPY, on the
// pgx connection under conn (inside the transaction open on it).
func copyStage(ctx context.Context, conn bun.Conn, rows *rowSource) (staged, error) {
	var rerr error
	st := newStaged()
	err := store.WithPgx(conn, func(pc *pgx.Conn) error {
		_, err := pc.CopyFrom(ctx, pgx.Identifier{"import_stage"}, stageCopyColumns, pgx.CopyFromFunc(func() ([]any, error) {
			r, ok, err := rows.next()
			if err != nil || !ok {
				rerr = err
				return nil, err
			}
			st.add(&r)
			return []any{r.line, r.address, r.name, r.attrs, r.raw, r.reject}, nil
		}))
		return err
	})
	if rerr != nil {
		return staged{}, rerr
	}
	if err != nil {
		return staged{}, fmt.Errorf("contacts: stage the rows: %w", err)
	}
	return st.end(), nil
}

// stageBatch is how many rows one SQLite INSERT stages (6 parameters
// each, far below SQLite's limit of 32,766).
const stageBatch = 200

// insertStage writes the rows into the staging table stageBatch at a
// time, with one prepared statement (SQLite: the rows' text is bound, not
// parsed).
func insertStage(ctx context.Context, tx bun.Tx, rows *rowSource) (staged, error) {
	insert := func(n int) string {
		return "INSERT INTO import_stage (line, address, name, attrs, raw, reject) VALUES (?, ?, ?, ?, ?, ?)" +
			strings.Repeat(", (?, ?, ?, ?, ?, ?)", n-1)
	}
	stmt, err := tx.Tx.PrepareContext(ctx, insert(stageBatch))
	if err != nil {
		return staged{}, fmt.Errorf("contacts: stage the rows: %w", err)
	}
	defer stmt.Close()
	st := newStaged()
	args := make([]any, 0, 6*stageBatch)
	for {
		r, ok, err := rows.next()
		if err != nil {
			return staged{}, err
		}
		if ok {
			st.add(&r)
			args = append(args, r.line, r.address, r.name, r.attrs, r.raw, r.reject)
		}
		switch {
		case len(args) == cap(args):
			_, err = stmt.ExecContext(ctx, args...)
		case !ok && len(args) > 0:
			_, err = tx.Tx.ExecContext(ctx, insert(len(args)/6), args...)
		}
		if err != nil {
			return staged{}, fmt.Errorf("contacts: stage the rows: %w", err)
		}
		if !ok {
			return st.end(), nil
		}
		if len(args) == cap(args) {
			args = args[:0]
		}
	}
}
