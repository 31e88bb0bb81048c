package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// group renders n with thousands separators: 8306727 → "8,306,727".
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// parseAmount reads a message count typed by an admin: digits, optionally
// grouped with commas or underscores ("1,000", "1_000").
func parseAmount(what, s string) (int64, error) {
	clean := strings.NewReplacer(",", "", "_", "").Replace(s)
	n, err := strconv.ParseInt(clean, 10, 64)
	if err != nil || clean == "" {
		return 0, usagef("%s %q is not a whole number", what, s)
	}
	if n <= 0 {
		return 0, usagef("%s must be positive, got %s", what, s)
	}
	return n, nil
}

// parseDay reads a calendar day (2026-11-01) in loc.
func parseDay(flagName, s string, loc *time.Location) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.ParseInLocation(time.DateOnly, s, loc)
	if err != nil {
		return time.Time{}, usagef("%s: %q is not a date like 2026-11-01", flagName, s)
	}
	return t, nil
}

// dayRange reads --from and --to days into [from, to): --to is inclusive,
// so the range ends at the start of the day after it.
func dayRange(from, to string, loc *time.Location) (time.Time, time.Time, error) {
	f, err := parseDay("--from", from, loc)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	t, err := parseDay("--to", to, loc)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	if !t.IsZero() {
		t = t.AddDate(0, 0, 1)
	}
	if !f.IsZero() && !t.IsZero() && !f.Before(t) {
		return time.Time{}, time.Time{}, usagef("--from %s is after --to %s", from, to)
	}
	return f, t, nil
}

// table renders aligned columns; a column whose header starts with '>' is
// right-aligned (numbers).
type table struct {
	head []string
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) {
	width := make([]int, len(t.head))
	right := make([]bool, len(t.head))
	head := make([]string, len(t.head))
	for i, h := range t.head {
		right[i] = strings.HasPrefix(h, ">")
		head[i] = strings.TrimPrefix(h, ">")
		width[i] = utf8.RuneCountInString(head[i])
	}
	for _, r := range t.rows {
		for i, c := range r {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		for i, c := range cells {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i > 0 {
				b.WriteString("  ")
			}
			if right[i] {
				b.WriteString(pad + c)
			} else {
				b.WriteString(c + pad)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	line(head)
	for _, r := range t.rows {
		line(r)
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeJSONLine writes v as one line of JSON (JSON Lines).
func writeJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// percent renders a rate as a percentage with two decimals: "0.25".
func percent(r float64) string { return strconv.FormatFloat(100*r, 'f', 2, 64) }

// writeFileAtomic writes path through write, beside it first, and renames
// the file into place once it is complete: a failure never leaves a
// partial file.
func writeFileAtomic(path string, write func(io.Writer) (int64, error)) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.partial")
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return 0, fmt.Errorf("export to %s: %w", path, err)
	}
	n, err := write(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		var pe *os.PathError
		if errors.As(err, &pe) {
			return 0, fmt.Errorf("export to %s: %w", path, pe.Err)
		}
		return 0, err
	}
	return n, nil
}
