package csvin

import (
	"bytes"
	"unicode/utf8"
)

// Encoding names, as Reader.Encoding returns them.
const (
	encUTF8    = "utf-8"
	encUTF8BOM = "utf-8-bom"
	encUTF16LE = "utf-16le"
	encUTF16BE = "utf-16be"
	enc1252    = "windows-1252"
)

// sniffEncoding names the encoding of a file that starts with prefix (all
// of the file if atEOF) and says how many bytes of byte order mark to drop.
func sniffEncoding(prefix []byte, atEOF bool) (name string, bom int) {
	switch {
	case bytes.HasPrefix(prefix, []byte{0xEF, 0xBB, 0xBF}):
		return encUTF8BOM, 3
	case bytes.HasPrefix(prefix, []byte{0xFF, 0xFE}):
		return encUTF16LE, 2
	case bytes.HasPrefix(prefix, []byte{0xFE, 0xFF}):
		return encUTF16BE, 2
	case validUTF8Prefix(prefix, atEOF):
		return encUTF8, 0
	}
	return enc1252, 0
}

// validUTF8Prefix reports whether p is valid UTF-8, allowing it (unless it
// is the whole file) to end inside a multi-byte sequence that the next
// bytes may complete.
func validUTF8Prefix(p []byte, atEOF bool) bool {
	if utf8.Valid(p) {
		return true
	}
	if atEOF {
		return false
	}
	for i := len(p) - 1; i >= 0 && i >= len(p)-(utf8.UTFMax-1); i-- {
		if utf8.RuneStart(p[i]) {
			return !utf8.FullRune(p[i:]) && utf8.Valid(p[:i])
		}
	}
	return false
}

// delimiters are the candidates, in order of preference on a tie.
const delimiters = ",;\t|"

// sniffLines is how many non-empty records the delimiter is judged on.
const sniffLines = 20

// sniffDelimiter picks the candidate that splits the first non-empty
// records of prefix into the same number (more than one) of fields most
// often; ',' when none splits them.
func sniffDelimiter(prefix []byte, atEOF bool) byte {
	best, bestScore := delimiters[0], 0
	var counts []int
	for i := range len(delimiters) {
		d := delimiters[i]
		counts = fieldCounts(counts[:0], prefix, d, atEOF)
		if s := agreement(counts); s > bestScore {
			best, bestScore = d, s
		}
	}
	return best
}

// agreement is how many of counts share the most frequent value above 1.
func agreement(counts []int) int {
	best := 0
	for i, c := range counts {
		if c < 2 {
			continue
		}
		n := 0
		for _, o := range counts[i:] {
			if o == c {
				n++
			}
		}
		best = max(best, n)
	}
	return best
}

// fieldCounts appends the number of fields, split by d outside quotes, of
// each of the first sniffLines records of p that hold more than spaces. A
// record cut off by the end of a partial prefix is left out unless it is
// the only one.
func fieldCounts(counts []int, p []byte, d byte, atEOF bool) []int {
	fields, content, inQuote, fieldStart := 1, false, false, true
	for i := 0; i < len(p) && len(counts) < sniffLines; i++ {
		c := p[i]
		switch {
		case inQuote:
			if c == '"' {
				if i+1 < len(p) && p[i+1] == '"' {
					i++
				} else {
					inQuote = false
				}
			}
		case c == '\n' || c == '\r':
			if content {
				counts = append(counts, fields)
			}
			fields, content, fieldStart = 1, false, true
		case c == d:
			fields, content, fieldStart = fields+1, true, true
		case c == '"' && fieldStart:
			inQuote, content, fieldStart = true, true, false
		case c == ' ':
		default:
			content, fieldStart = true, false
		}
	}
	if content && len(counts) < sniffLines && (atEOF || len(counts) == 0) {
		counts = append(counts, fields)
	}
	return counts
}
