package csvin

import (
	"bytes"
	"encoding/csv"
	"io"
	"strings"
	"unicode/utf8"
)

// maxRaw bounds Record.Raw and RowError.Raw.
const maxRaw = 1000

// Next returns the next data row, skipping blank lines (a line with no
// characters, or only delimiters and spaces, or a row whose fields are all
// spaces); io.EOF at the end. A malformed row (e.g. a bare quote in an
// unquoted field, an unterminated quoted field at EOF, a row over 1 MiB) is
// returned as an error of type *RowError that names the line; reading can
// continue after it with Next (the reader resynchronises at the next line,
// so the lines a broken quoted field swallowed are read again as rows). Any
// other error comes from the input and ends the reading.
// The Fields slice may be reused by the next call: copy what you keep.
func (r *Reader) Next() (Record, error) {
	if r.done != nil {
		return Record{}, r.done
	}
	for {
		text, line, cut, err := r.nextLine()
		if err != nil {
			r.done = err
			return Record{}, err
		}
		if cut {
			return Record{}, &RowError{Line: line, Raw: clip(text), Err: errLineTooLong}
		}
		if bytes.IndexByte(text, '"') < 0 {
			if r.blank(text) {
				continue
			}
			return r.split(text, line), nil
		}
		rec, ok, err := r.readQuoted(text, line)
		if err != nil || ok {
			return rec, err
		}
	}
}

// nextLine returns the next line to parse, decoded to UTF-8, with its line
// number: one pushed back after a malformed row, else one from the input.
// The text is valid until the next call.
func (r *Reader) nextLine() (text []byte, line int, cut bool, err error) {
	if r.pendHead < len(r.pendSpans) {
		s := r.pendSpans[r.pendHead]
		r.pendHead++
		return r.pend[s.start:s.end], s.line, s.cut, nil
	}
	if r.pendHead > 0 {
		r.pend, r.pendSpans, r.pendHead = r.pend[:0], r.pendSpans[:0], 0
	}
	b, cut, err := r.lr.next()
	if err != nil {
		return nil, 0, false, err
	}
	return r.dec.decode(b), r.lr.lines, cut, nil
}

// blank reports whether a line holds only delimiters and spaces.
func (r *Reader) blank(text []byte) bool {
	for _, c := range text {
		if c != ' ' && c != '\t' && c != r.delim {
			return false
		}
	}
	return true
}

// split makes the record of a line without quotes: its fields are parts of
// one string, which is also its Raw.
func (r *Reader) split(text []byte, line int) Record {
	s := string(text)
	fields := r.fields[:0]
	for rest := s; ; {
		i := strings.IndexByte(rest, r.delim)
		if i < 0 {
			fields = append(fields, rest)
			break
		}
		fields = append(fields, rest[:i])
		rest = rest[i+1:]
	}
	r.fields = fields
	return Record{Line: line, Fields: fields, Raw: clip(s)}
}

// readQuoted parses a record whose first line has a quote, reading more
// lines while a quoted field goes on. ok is false for a blank record.
func (r *Reader) readQuoted(text []byte, line int) (rec Record, ok bool, err error) {
	r.lines = append(r.lines[:0], text...)
	r.spans = append(r.spans[:0], span{end: len(text), line: line})
	r.rec, r.ends = r.rec[:0], r.ends[:0]
	for pos := 0; ; {
		if len(r.ends) > 0 { // r.rec keeps the delimiters, for Raw
			r.rec = append(r.rec, r.delim)
		}
		if pos == len(text) || text[pos] != '"' {
			end := len(text)
			i := bytes.IndexByte(text[pos:], r.delim)
			if i >= 0 {
				end = pos + i
			}
			if bytes.IndexByte(text[pos:end], '"') >= 0 {
				return Record{}, false, r.reject(csv.ErrBareQuote)
			}
			r.rec = append(r.rec, text[pos:end]...)
			r.ends = append(r.ends, len(r.rec))
			if i < 0 {
				return r.finish(line)
			}
			pos = end + 1
			continue
		}
		for pos++; ; {
			i := bytes.IndexByte(text[pos:], '"')
			if i < 0 {
				r.rec = append(r.rec, text[pos:]...)
				r.rec = append(r.rec, '\n')
				if text, err = r.continued(); err != nil {
					return Record{}, false, r.reject(err)
				}
				pos = 0
				continue
			}
			r.rec = append(r.rec, text[pos:pos+i]...)
			pos += i + 1
			if pos < len(text) && text[pos] == '"' {
				r.rec = append(r.rec, '"')
				pos++
				continue
			}
			r.ends = append(r.ends, len(r.rec))
			if pos == len(text) {
				return r.finish(line)
			}
			if text[pos] != r.delim {
				return Record{}, false, r.reject(csv.ErrQuote)
			}
			pos++
			break
		}
	}
}

// continued reads the next line of a record whose quoted field goes on,
// keeping it in r.lines.
func (r *Reader) continued() ([]byte, error) {
	text, line, cut, err := r.nextLine()
	switch {
	case err == io.EOF:
		return nil, errUnterminated
	case err != nil:
		return nil, err
	case cut:
		text = text[:clipLen(text)]
	}
	start := len(r.lines)
	r.lines = append(r.lines, text...)
	r.spans = append(r.spans, span{start: start, end: len(r.lines), line: line, cut: cut})
	if cut || len(r.lines) > maxRecord {
		return nil, errRowTooLong
	}
	return r.lines[start:], nil
}

// reject turns the failure of a quoted record into a *RowError for its
// first line and pushes its other lines back to be read again. An error of
// the input is returned as it is, and ends the reading.
func (r *Reader) reject(err error) error {
	switch err {
	case csv.ErrBareQuote, csv.ErrQuote, errUnterminated, errRowTooLong:
	default:
		r.done = err
		return err
	}
	first := r.spans[0]
	rowErr := &RowError{Line: first.line, Raw: clip(r.lines[first.start:first.end]), Err: err}
	if len(r.spans) == 1 {
		return rowErr
	}
	buf, spans := r.spare[:0], r.spareSpans[:0]
	add := func(text []byte, s span) {
		start := len(buf)
		buf = append(buf, text[s.start:s.end]...)
		spans = append(spans, span{start: start, end: len(buf), line: s.line, cut: s.cut})
	}
	for _, s := range r.spans[1:] {
		add(r.lines, s)
	}
	for _, s := range r.pendSpans[r.pendHead:] {
		add(r.pend, s)
	}
	r.spare, r.spareSpans = r.pend[:0], r.pendSpans[:0]
	r.pend, r.pendSpans, r.pendHead = buf, spans, 0
	return rowErr
}

// finish makes the record of a quoted row from r.rec and r.ends. When no
// field needs quotes, r.rec is also the Raw text, and one string holds both.
func (r *Reader) finish(line int) (Record, bool, error) {
	blank, plain := true, true
	start := 0
	for _, end := range r.ends {
		f := r.rec[start:end]
		blank = blank && len(bytes.Trim(f, " \t")) == 0
		plain = plain && !needsQuotes(f, r.delim)
		start = end + 1
	}
	if blank {
		return Record{}, false, nil
	}
	s := string(r.rec)
	fields := r.fields[:0]
	start = 0
	for _, end := range r.ends {
		fields = append(fields, s[start:end])
		start = end + 1
	}
	r.fields = fields
	raw := clip(s)
	if !plain {
		raw = r.rawText(fields)
	}
	return Record{Line: line, Fields: fields, Raw: raw}, true, nil
}

// needsQuotes reports whether a field must be quoted in Raw: it holds the
// delimiter, a quote or a line end.
func needsQuotes[T string | []byte](f T, delim byte) bool {
	for i := 0; i < len(f); i++ {
		if c := f[i]; c == delim || c == '"' || c == '\n' || c == '\r' {
			return true
		}
	}
	return false
}

// rawText joins fields with the delimiter, quoting those that need it, and
// stops at maxRaw bytes.
func (r *Reader) rawText(fields []string) string {
	raw := r.raw[:0]
	for i, f := range fields {
		if len(raw) > maxRaw {
			break
		}
		if i > 0 {
			raw = append(raw, r.delim)
		}
		if !needsQuotes(f, r.delim) {
			raw = append(raw, f...)
			continue
		}
		raw = append(raw, '"')
		for j := 0; j < len(f) && len(raw) <= maxRaw; j++ {
			if f[j] == '"' {
				raw = append(raw, '"')
			}
			raw = append(raw, f[j])
		}
		raw = append(raw, '"')
	}
	r.raw = raw
	return string(raw[:clipLen(raw)])
}

// clipLen is how much of text fits in maxRaw bytes without cutting a
// UTF-8 sequence.
func clipLen[T string | []byte](text T) int {
	n := len(text)
	if n <= maxRaw {
		return n
	}
	n = maxRaw
	for n > 0 && !utf8.RuneStart(text[n]) {
		n--
	}
	return n
}

// clip is text cut to at most maxRaw bytes (see clipLen).
func clip[T string | []byte](text T) string { return string(text[:clipLen(text)]) }
