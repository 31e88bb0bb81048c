package mailing

import (
	"bytes"
	"context"
	"slices"
	"strings"

	"github.com/jhillyerd/enmime/v2"
	"github.com/jhillyerd/enmime/v2/mediatype"
)

// What Submit guarantees of a message's MIME structure: enmime reads it
// without error — the header of the message and of every part, their
// Content-Type fields, and for a multipart message its boundary and the
// parts between its delimiters — within ParseTimeout, without a panic.
// enmime is lenient (a missing closing delimiter, a part without
// Content-Type, an unknown encoding are only warnings), so what it refuses
// is a message whose structure cannot be read at all: a multipart without
// a boundary, a Content-Type that does not parse, a header that is not one.
//
// Reading every message with enmime cost a quarter of the relay's CPU: its
// boundary reader takes a byte at a time and compares each against the
// boundary. So checkStructure first tries to prove, in a walk that copies
// nothing, that the message is one enmime reads; only the messages it
// cannot prove (an unusual structure, or a broken one) are given to enmime,
// whose verdict is the one that counts. The proof holds for the shapes
// mail clients and libraries write: every boundary at most 70 characters
// (RFC 2046 §5.1.1) and found only on its own delimiter lines, exactly
// "--boundary" and one closing "--boundary--", nesting at most
// maxStructureDepth deep, and headers made of fields and their
// continuation lines only (contentType reads them as enmime's ReadHeader
// does). Content-Type values are parsed with enmime's own
// mediatype.ParseWithOptions, so they are judged exactly as enmime judges
// them. FuzzStructure checks that every message the walk proves is one
// enmime reads.
const maxStructureDepth = 16

// checkStructure refuses a message whose MIME structure enmime cannot read
// (above), reading it with enmime only when structureProved cannot show it
// is readable.
func checkStructure(ctx context.Context, raw []byte) error {
	if structureProved(raw) {
		return nil
	}
	return parseMIME(ctx, raw)
}

// structureProved reports whether raw, a message with CRLF line ends
// only (splitHeader and checkBody have seen to that), is certainly one
// enmime's structureParser reads without error. false says nothing.
func structureProved(raw []byte) (proved bool) {
	defer func() {
		if recover() != nil { // in enmime's media type parser: let enmime decide, under its own recover
			proved = false
		}
	}()
	return entityProved(raw, true, 0)
}

// entityProved proves one entity: the whole message (root) or a part's
// content as enmime's boundary reader delimits it.
func entityProved(data []byte, root bool, depth int) bool {
	end := headerEnd(data)
	ctype, ok := contentType(data[:end])
	if !ok {
		return false
	}
	if ctype == "" {
		return true // text/plain; enmime reads the body as it is
	}
	mt, params, _, err := mediatype.ParseWithOptions(ctype, mediatype.ParseOptions{})
	if err != nil {
		return false
	}
	boundary := params["boundary"]
	if root {
		// enmime reads the root as multipart by its type (and refuses
		// one without a boundary); anything else is read as it is.
		if !strings.HasPrefix(mt, "multipart/") {
			return true
		}
		return boundary != "" && multipartProved(data[end:], boundary, depth)
	}
	// A part is read as multipart when it has a boundary, whatever its
	// type, unless it is text/plain or text/html.
	switch {
	case boundary == "", mt == "text/plain", mt == "text/html":
		return true
	case !strings.HasPrefix(mt, "multipart/"):
		return false // a boundary on a non-multipart part: let enmime read it
	}
	return multipartProved(data[end:], boundary, depth+1)
}

// multipartProved proves a multipart body: every occurrence of
// "--boundary" begins a line that is exactly a delimiter ("--boundary")
// or, once and last, the close ("--boundary--", at the end of the body or
// followed by CRLF), and every part between them is proved. A part's
// content is what lies between the CRLF that ends its delimiter line and
// the CRLF before the next one, as enmime's boundary reader gives it.
func multipartProved(body []byte, boundary string, depth int) bool {
	if depth >= maxStructureDepth || len(boundary) > 70 {
		return false
	}
	delim := "--" + boundary
	var parts [][]byte
	start, closed := -1, false
	for pos := 0; ; {
		i := bytes.Index(body[pos:], []byte(delim))
		if i < 0 {
			break
		}
		i += pos
		if closed || (i > 0 && (i < 2 || body[i-2] != '\r' || body[i-1] != '\n')) {
			return false // after the close, or not at the start of a line
		}
		rest := body[i+len(delim):]
		last := bytes.HasPrefix(rest, []byte("--\r\n")) || string(rest) == "--"
		if !last && !bytes.HasPrefix(rest, []byte("\r\n")) {
			return false // "--boundary" followed by anything else
		}
		if last && start < 0 {
			return false // closed before it opened
		}
		if start >= 0 {
			parts = append(parts, body[start:max(start, i-2)])
		}
		closed = last
		start = i + len(delim) + 2
		pos = start
	}
	if !closed {
		return false
	}
	for _, p := range parts {
		if !entityProved(p, false, depth) {
			return false
		}
	}
	return true
}

// headerEnd is the length of data's header block with the empty line that
// ends it (all of data when there is none), where enmime's ReadHeader
// stops reading.
func headerEnd(data []byte) int {
	if bytes.HasPrefix(data, []byte("\r\n")) {
		return 2
	}
	if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	return len(data)
}

// contentType returns the value of the first Content-Type field of a
// header block (CRLF lines, up to and with the empty line that ends it)
// as enmime's ReadHeader gives it, when every line is a field — a name of
// printable ASCII but colon, then a colon — or a continuation of one (a
// line starting with a space or a tab); ok is false for any other header,
// which ReadHeader may refuse or read differently.
//
// ReadHeader trims each line of white space and joins a field's lines
// with one space; the value is what follows the colon, trimmed.
func contentType(header []byte) (value string, ok bool) {
	var acc []byte // the Content-Type value being read
	fields, reading, found := 0, false, false
	for len(header) > 0 {
		line, rest, _ := bytes.Cut(header, []byte("\r\n"))
		header = rest
		if len(line) == 0 {
			break // the empty line that ends the header
		}
		if line[0] == ' ' || line[0] == '\t' {
			if fields == 0 {
				return "", false // ReadHeader refuses a header that begins with a continuation
			}
			if reading {
				acc = append(append(acc, ' '), bytes.Trim(line, " \t")...)
			}
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return "", false
		}
		for _, c := range line[:colon] {
			if c < 33 || c > 126 {
				return "", false
			}
		}
		fields++
		reading = !found && bytes.EqualFold(line[:colon], []byte("Content-Type"))
		if reading {
			found = true
			acc = slices.Clip(bytes.TrimRight(line[colon+1:], " \t")) // appending copies: never write into the message
		}
	}
	return string(bytes.Trim(acc, " \t")), true
}

// structureParser reads a message's MIME structure only: no transfer
// decoding, no charset detection (which took 45% of the relay's CPU), no
// HTML to text conversion. A Parser holds only its options.
var structureParser = enmime.NewParser(enmime.RawContent(true), enmime.DisableCharacterDetection(true),
	enmime.DisableTextConversion(true))

// parseMIME reads the message's MIME structure with enmime, within
// ParseTimeout, recovering from a parser panic: a message the parser
// cannot read is refused, never allowed to take the server down.
func parseMIME(ctx context.Context, raw []byte) error {
	ctx, cancel := context.WithTimeout(ctx, ParseTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- contentErr("message", "the MIME structure could not be read (parser failure)")
			}
		}()
		// ReadEnvelope is ReadParts, then EnvelopeFromPart, which can fail
		// only for a multipart message (its Content-Type and boundary) and
		// otherwise copies a single-part body out as text (a fifth of the
		// relay's allocations): so it runs for multipart messages only.
		root, err := structureParser.ReadParts(bytes.NewReader(raw))
		if err == nil && strings.Contains(strings.ToLower(root.Header.Get("Content-Type")), "multipart") {
			_, err = structureParser.EnvelopeFromPart(root)
		}
		if err != nil {
			err = contentErr("message", "the MIME structure could not be read: %v", err)
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return contentErr("message", "the MIME structure could not be read within %s", ParseTimeout)
	}
}
