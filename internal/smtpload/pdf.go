package smtpload

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// FakePDF returns size bytes that look like a one-page PDF a legacy system
// attaches (a report generator's certificate): the header, a catalog, a
// page with a text stream and a font, an image XObject whose /FlateDecode
// stream is pseudo-random bytes (compressed data is as dense; these are
// not really compressed), an info dictionary, a correct cross-reference
// table and trailer. The same size gives the same bytes. Below about 2 KB
// the image stream is empty and the result is longer than size.
func FakePDF(size int) []byte {
	n := max(size-1500, 0)
	var out []byte
	for range 8 { // the lengths written inside move the total: settle them
		out = buildPDF(n)
		d := size - len(out)
		if d == 0 || n+d < 0 {
			break
		}
		n += d
	}
	return out
}

// buildPDF is the document with an image stream of n bytes.
func buildPDF(n int) []byte {
	content := "BT /F1 16 Tf 72 770 Td (CONSTANCIA DE POSTULACION) Tj ET\n" +
		"BT /F1 11 Tf 72 740 Td (Autoridad Nacional del Servicio Civil - SERVIR) Tj ET\n" +
		"BT /F1 11 Tf 72 720 Td (Convocatoria CAS - Talento Peru) Tj ET\n" +
		"q 400 0 0 200 97 480 cm /Im1 Do Q\n" +
		"BT /F1 9 Tf 72 60 Td (Documento generado automaticamente. Verifique su autenticidad en www.servir.gob.pe) Tj ET\n"
	objects := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 5 0 R >> " +
			"/XObject << /Im1 6 0 R >> /ProcSet [/PDF /Text /ImageC] >> /Contents 4 0 R >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%sendstream", len(content), content),
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
		"", // the image, below
		"<< /Producer (JasperReports Library version 6.20.6) /Creator (SISCAS) " +
			"/CreationDate (D:20261207090000-05'00') /ModDate (D:20261207090000-05'00') >>",
	}
	var b bytes.Buffer
	b.Grow(n + 2048)
	b.WriteString("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
	offsets := make([]int, len(objects))
	for i, o := range objects {
		offsets[i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n", i+1)
		if i == 5 {
			fmt.Fprintf(&b, "<< /Type /XObject /Subtype /Image /Width 400 /Height 200 /ColorSpace /DeviceRGB "+
				"/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n", n)
			b.Write(noise(n))
			b.WriteString("\nendstream")
		} else {
			b.WriteString(o)
		}
		b.WriteString("\nendobj\n")
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objects)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objects)+1, len(objects), xref)
	return b.Bytes()
}

// noise is n deterministic pseudo-random bytes (xorshift64*) after a zlib
// header, as a Flate stream begins.
func noise(n int) []byte {
	out := make([]byte, n+8)
	x := uint64(0x2545f4914f6cdd1d)
	for i := 0; i < n; i += 8 {
		x ^= x >> 12
		x ^= x << 25
		x ^= x >> 27
		binary.LittleEndian.PutUint64(out[i:], x*0x2545f4914f6cdd1d)
	}
	out = out[:n]
	if n >= 2 {
		out[0], out[1] = 0x78, 0x9c
	}
	return out
}
