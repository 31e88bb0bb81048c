package xlsxin

import (
	"archive/zip"
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/richardlehane/mscfb"
	"github.com/xuri/excelize/v2"
)

// The first bytes of a zip archive (an .xlsx file) and of an OLE compound
// file (an .xls file, or an encrypted .xlsx one).
var (
	zipMagic = []byte("PK\x03\x04")
	oleMagic = []byte{0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1}
)

// maxInMemory bounds the unzipped size of the parts excelize holds in
// memory (all but the big worksheets and shared strings).
const maxInMemory = 256 << 20

// maxPart bounds the package parts read here (the workbook and its
// relationships), as a defence against hostile files.
const maxPart = 16 << 20

// sniff tells an OLE compound file from a zip archive: the first is an
// encrypted workbook (Excel keeps the encrypted .xlsx in its
// EncryptedPackage stream) or else an .xls file.
func sniff(name string, magic []byte) error {
	switch {
	case bytes.HasPrefix(magic, zipMagic):
		return nil
	case !bytes.Equal(magic, oleMagic):
		return fmt.Errorf("%w: it is not a zip archive", ErrNotWorkbook)
	}
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("xlsxin: %w", err)
	}
	defer f.Close()
	doc, err := mscfb.New(f)
	if err != nil {
		return ErrXLS
	}
	for e, err := doc.Next(); err == nil; e, err = doc.Next() {
		if e.Name == "EncryptedPackage" || e.Name == "EncryptionInfo" {
			return ErrEncrypted
		}
	}
	return ErrXLS
}

// sheet is the worksheet a Reader reads.
type sheet struct {
	name    string
	lastRow int // from its dimension, 0 if it states none
}

// pkg is a workbook's zip archive, its part names in lower case (part
// names are case-insensitive).
type pkg map[string]*zip.File

// firstSheet finds the first visible worksheet of the workbook in file
// name, from its package parts (excelize lists chart sheets with the
// worksheets and has no cheap way to tell them apart).
func firstSheet(name string) (sheet, error) {
	zr, err := zip.OpenReader(name)
	if err != nil {
		return sheet{}, fmt.Errorf("%w: %v", ErrNotWorkbook, err)
	}
	defer zr.Close()
	p := pkg{}
	for _, f := range zr.File {
		p[strings.ToLower(strings.ReplaceAll(f.Name, `\`, "/"))] = f
	}
	if mt, err := p.read("mimetype"); err == nil && bytes.HasPrefix(mt, []byte("application/vnd.oasis.opendocument")) {
		return sheet{}, ErrODS
	}
	if n := p.inMemory(); n > maxInMemory {
		return sheet{}, fmt.Errorf("%w: its parts other than the worksheets (pictures?) unzip to %d MiB", ErrTooLarge, n>>20)
	}
	wbPath := "xl/workbook.xml"
	if rels, err := p.rels("_rels/.rels"); err == nil {
		for _, r := range rels {
			if strings.HasSuffix(r.Type, "/officeDocument") {
				wbPath = partPath("", r.Target)
			}
		}
	}
	var wb struct {
		Sheets []struct {
			Name  string `xml:"name,attr"`
			State string `xml:"state,attr"`
			ID    string `xml:"id,attr"` // r:id
		} `xml:"sheets>sheet"`
	}
	if err := p.decode(wbPath, &wb); err != nil {
		return sheet{}, fmt.Errorf("%w: %v", ErrNotWorkbook, err)
	}
	dir, base := path.Split(wbPath)
	rels, err := p.rels(dir + "_rels/" + base + ".rels")
	if err != nil {
		return sheet{}, fmt.Errorf("%w: %v", ErrNotWorkbook, err)
	}
	var names []string
	for _, s := range wb.Sheets {
		names = append(names, fmt.Sprintf("%q", s.Name))
		r, ok := rels[s.ID]
		if (s.State == "" || s.State == "visible") && ok && strings.HasSuffix(r.Type, "/worksheet") {
			return sheet{name: s.Name, lastRow: p.lastRow(partPath(dir, r.Target))}, nil
		}
	}
	if len(names) == 0 {
		return sheet{}, fmt.Errorf("%w: it has no sheet", ErrNoSheet)
	}
	return sheet{}, fmt.Errorf("%w (sheets %s: hidden, or charts)", ErrNoSheet, strings.Join(names, ", "))
}

// inMemory is the unzipped size of the parts excelize reads into memory:
// all but the worksheets and the shared strings table bigger than
// inMemoryXML, which it unzips to temporary files (excelize's
// ReadZipReader).
func (p pkg) inMemory() int64 {
	var n int64
	for name, f := range p {
		size := int64(f.UncompressedSize64)
		if size > inMemoryXML && (strings.HasPrefix(name, "xl/worksheets/sheet") || name == "xl/sharedstrings.xml") {
			continue
		}
		n += max(size, 0)
	}
	return n
}

// rel is one package relationship.
type rel struct {
	ID     string `xml:"Id,attr"`
	Type   string `xml:"Type,attr"`
	Target string `xml:"Target,attr"`
}

// rels reads a relationships part, by ID.
func (p pkg) rels(name string) (map[string]rel, error) {
	var v struct {
		Rels []rel `xml:"Relationship"`
	}
	if err := p.decode(name, &v); err != nil {
		return nil, err
	}
	m := make(map[string]rel, len(v.Rels))
	for _, r := range v.Rels {
		m[r.ID] = r
	}
	return m, nil
}

// partPath resolves a relationship target against the source part's
// directory.
func partPath(dir, target string) string {
	if strings.HasPrefix(target, "/") {
		return strings.ToLower(path.Clean(target[1:]))
	}
	return strings.ToLower(path.Clean(dir + target))
}

func (p pkg) open(name string) (io.ReadCloser, error) {
	f, ok := p[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("no part %s", name)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("part %s: %w", name, err)
	}
	return rc, nil
}

func (p pkg) read(name string) ([]byte, error) {
	rc, err := p.open(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, maxPart))
}

func (p pkg) decode(name string, v any) error {
	b, err := p.read(name)
	if err != nil {
		return err
	}
	if err := xml.Unmarshal(b, v); err != nil {
		return fmt.Errorf("part %s: %w", name, err)
	}
	return nil
}

// lastRow reads a worksheet's <dimension ref="A1:D1000"/>, which comes
// before its rows, and returns the last row of that range; 0 without one.
func (p pkg) lastRow(name string) int {
	rc, err := p.open(name)
	if err != nil {
		return 0
	}
	defer rc.Close()
	d := xml.NewDecoder(io.LimitReader(rc, 1<<20))
	for {
		tok, err := d.RawToken()
		if err != nil {
			return 0
		}
		se, ok := tok.(xml.StartElement)
		switch {
		case !ok:
			continue
		case se.Name.Local == "sheetData":
			return 0
		case se.Name.Local != "dimension":
			continue
		}
		for _, a := range se.Attr {
			if a.Name.Local == "ref" {
				// A single cell, "A1", is what Excel writes for an empty sheet.
				_, last, ok := strings.Cut(a.Value, ":")
				if !ok {
					return 0
				}
				_, row, err := excelize.CellNameToCoordinates(last)
				if err != nil {
					return 0
				}
				return row
			}
		}
		return 0
	}
}
