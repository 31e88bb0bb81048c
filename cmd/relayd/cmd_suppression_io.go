package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/address"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/suppress"
	"github.com/servir-pe/envios/mailing"
)

// exportPage is how many entries export reads at a time (keyset pages).
const exportPage = 1000

func runSuppressionExport(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("suppression export", &g)
	format := fs.String("format", "csv", "csv or jsonl")
	out := fs.String("o", "", "write to FILE (default standard output)")
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	if *format != "csv" && *format != "jsonl" {
		return usagef("--format must be csv or jsonl, not %q", *format)
	}
	db, _, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	write := func(w io.Writer) (int64, error) { return exportSuppressions(ctx, db, w, *format, e.now(), g.loc) }
	if *out == "" {
		_, err := write(e.stdout)
		return err
	}
	n, err := writeFileAtomic(*out, write)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "exported %s %s to %s\n", group(n), plural(int(n), "suppression", "suppressions"), *out)
	return nil
}

// exportSuppressions writes every entry, removed and expired ones too, in
// id order, a page at a time: memory stays the same whatever the list's
// size.
func exportSuppressions(ctx context.Context, db bun.IDB, w io.Writer, format string, now time.Time, loc *time.Location) (int64, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	cw := csv.NewWriter(bw)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	if format == "csv" {
		if err := cw.Write(suppressionColumns); err != nil {
			return 0, err
		}
	}
	var n int64
	rec := make([]string, len(suppressionColumns))
	f := suppress.Filter{Limit: exportPage}
	for {
		rows, err := suppress.List(ctx, db, f, now)
		if err != nil {
			return n, err
		}
		for _, x := range rows {
			j := entryJSON(x, "", now, loc)
			if format == "jsonl" {
				err = enc.Encode(j)
			} else {
				rid := ""
				if j.RecipientID != nil {
					rid = strconv.FormatInt(*j.RecipientID, 10)
				}
				rec[0], rec[1], rec[2], rec[3] = strconv.FormatInt(j.ID, 10), csvCell(j.Address), string(j.Scope), csvCell(j.Account)
				rec[4], rec[5], rec[6], rec[7] = csvCell(j.Topic), string(j.Reason), strconv.FormatBool(j.Active), j.CreatedAt
				rec[8], rec[9], rec[10], rec[11] = orEmpty(j.ExpiresAt), csvCell(j.Actor), rid, csvCell(string(j.Evidence))
				rec[12], rec[13], rec[14] = orEmpty(j.RemovedAt), csvCell(j.RemovedBy), csvCell(j.RemovedReason)
				err = cw.Write(rec)
			}
			if err != nil {
				return n, err
			}
			n++
		}
		if len(rows) < exportPage {
			break
		}
		f.After = rows[len(rows)-1].ID
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return n, err
	}
	return n, bw.Flush()
}

func orEmpty(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// csvCell defuses a cell a spreadsheet would evaluate, as report export
// does: one starting with '=', '+', '-', '@', a tab or a carriage return
// gets a leading single quote (OWASP, CSV injection).
func csvCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// importChunk is how many lines of an import commit together.
const importChunk = 1000

// maxImportLine bounds a line of an import file.
const maxImportLine = 4096

// errDryRun rolls back a dry run's chunk.
var errDryRun = errors.New("dry run")

func runSuppressionImport(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("suppression import", &g)
	sf := scopeFlags{fs.String("reason", "import", "why they are on the list"), fs.String("scope", "", "all, bulk or account"),
		fs.String("account", "", "the account, for scope account"), fs.String("topic", "", "a campaign label, for scope account")}
	why := fs.String("why", "", "why (kept in each entry's evidence and the audit log)")
	dryRun := fs.Bool("dry-run", false, "check and count everything, change nothing")
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	if strings.TrimSpace(*why) == "" {
		return usagef("suppression import: --why TEXT is required (it goes to each entry's evidence and the audit log)")
	}
	file, err := os.Open(pos[0])
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("import: %s: %w", pos[0], pe.Err)
		}
		return err
	}
	defer file.Close()
	db, l, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	tmpl, _, err := sf.suppression(ctx, l, "suppression import")
	if err != nil {
		return err
	}
	tmpl.Actor, tmpl.Now = e.defaultActor(), e.now()
	im := &importer{e: e, db: db, tmpl: tmpl, why: strings.TrimSpace(*why), source: filepath.Base(pos[0]), dryRun: *dryRun}
	if err := im.run(ctx, bufio.NewReaderSize(file, maxImportLine+2)); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "read %s %s: %s added, %s already suppressed, %s rejected\n", group(im.read), plural(int(im.read), "address", "addresses"),
		group(im.added), group(im.already), group(im.rejected))
	if *dryRun {
		fmt.Fprintln(e.stdout, "dry run: nothing was changed")
	}
	return nil
}

// importer reads an import file line by line and inserts its addresses a
// chunk at a time; memory stays the same whatever the file's size.
type importer struct {
	e      *env
	db     *bun.DB
	tmpl   suppress.Add
	why    string
	source string
	dryRun bool

	line                           int   // the last line read
	read, added, already, rejected int64 // read = added + already + rejected
	pending                        []importLine
	committedLine                  int // the last line of the last chunk committed
}

type importLine struct {
	n    int
	addr string
}

func (im *importer) reject(n int, text, why string) {
	im.read++
	im.rejected++
	if len(text) > 60 {
		text = text[:60] + "…"
	}
	fmt.Fprintf(im.e.stdout, "line %d: rejected: %s: %q\n", n, why, text)
}

func (im *importer) run(ctx context.Context, r *bufio.Reader) error {
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			im.line++
			n := im.line
			text := string(line)
			for errors.Is(err, bufio.ErrBufferFull) { // the rest of the line
				_, err = r.ReadSlice('\n')
			}
			im.reject(n, text, fmt.Sprintf("longer than %d bytes", maxImportLine))
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("import: %s: %w", im.source, err)
			}
			if err == nil {
				continue
			}
		} else if len(line) > 0 {
			im.line++
			im.take(string(line))
		}
		if len(im.pending) >= importChunk || (err != nil && len(im.pending) > 0) {
			if ferr := im.flush(ctx); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("import: %s: %w", im.source, err)
		}
	}
}

// take reads one line: blank lines are skipped, a first line without an
// address is a header; the address is the line, or its first CSV field.
func (im *importer) take(line string) {
	n := im.line
	line = strings.TrimRight(line, "\r\n")
	if n == 1 {
		line = strings.TrimPrefix(line, "\ufeff") // a spreadsheet's byte order mark
	}
	if strings.TrimSpace(line) == "" {
		return
	}
	field := line
	if strings.HasPrefix(strings.TrimSpace(line), `"`) {
		cr := csv.NewReader(strings.NewReader(line))
		cr.FieldsPerRecord = -1
		rec, err := cr.Read()
		if err != nil {
			im.reject(n, line, "not valid CSV")
			return
		}
		field = rec[0]
	} else if i := strings.IndexAny(line, ",;\t"); i >= 0 {
		field = line[:i]
	}
	field = strings.TrimSpace(field)
	if n == 1 && !strings.Contains(field, "@") {
		fmt.Fprintf(im.e.stdout, "line 1: header %q skipped\n", field)
		return
	}
	a, err := address.Parse(field)
	if err != nil {
		var me *mailing.Error
		why := "invalid address"
		if errors.As(err, &me) {
			if _, reason, ok := strings.Cut(me.Public, ": "); ok {
				why = "invalid address: " + reason
			}
		}
		im.reject(n, field, why)
		return
	}
	im.pending = append(im.pending, importLine{n, a.Addr})
}

// flush inserts the pending lines in one transaction (rolled back in a dry
// run) and reports each refusal.
func (im *importer) flush(ctx context.Context) error {
	type outcome struct {
		added bool
		err   error
	}
	var res []outcome
	err := store.RunInTx(ctx, im.db, func(ctx context.Context, tx bun.Tx) error {
		res = res[:0]
		for _, p := range im.pending {
			add := im.tmpl
			add.Address = p.addr
			add.Evidence = map[string]string{"why": im.why, "file": im.source, "line": strconv.Itoa(p.n)}
			_, added, err := suppress.Insert(ctx, tx, add)
			if err != nil && !errors.Is(err, suppress.ErrInvalid) {
				return err
			}
			res = append(res, outcome{added, err})
		}
		if im.dryRun {
			return errDryRun
		}
		return nil
	})
	if err != nil && !errors.Is(err, errDryRun) {
		first := im.pending[0].n
		if im.committedLine == 0 {
			return fmt.Errorf("import stopped at lines %d–%d: %w (nothing was imported)", first, im.line, err)
		}
		return fmt.Errorf("import stopped at lines %d–%d: %w (lines 1–%d are imported: run it again, what is there already is skipped)",
			first, im.line, err, im.committedLine)
	}
	for i, o := range res {
		switch {
		case o.err != nil:
			im.reject(im.pending[i].n, im.pending[i].addr, strings.TrimPrefix(o.err.Error(), suppress.ErrInvalid.Error()+": "))
		case o.added:
			im.read++
			im.added++
		default:
			im.read++
			im.already++
		}
	}
	if !im.dryRun {
		im.committedLine = im.pending[len(im.pending)-1].n
	}
	im.pending = im.pending[:0]
	return nil
}
