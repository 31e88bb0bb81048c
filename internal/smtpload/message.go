package smtpload

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"strconv"
	"strings"
	"time"
)

// Shape is the kind of message a run sends.
type Shape string

// The shapes of message a run can send.
const (
	// Plain is a text body of Lorem ipsum lines with a four-field header,
	// the whole message Size bytes.
	Plain Shape = "plain"
	// Multipart is what a legacy system's notification looks like: a
	// multipart/alternative of a text and an HTML part, both
	// quoted-printable UTF-8, personalised with a name, a document number
	// and a case number in the subject and both bodies (so every message
	// differs), the whole message about Size bytes.
	Multipart Shape = "multipart"
	// PDF is the Multipart message inside a multipart/mixed with a
	// PDFSize-byte application/pdf attachment in base64.
	PDF Shape = "pdf"
)

// Shapes lists the shapes in the order the command documents them.
var Shapes = []Shape{Plain, Multipart, PDF}

// PDFSize is the size of the PDF shape's attachment before base64.
const PDFSize = 100 << 10

// Generator builds the messages of one shape and size. Its messages are
// deterministic: the same n gives the same bytes but for the Message-ID.
// A Generator is safe for concurrent use.
type Generator struct {
	shape Shape
	size  int
	// Built once: the static tails of the bodies, quoted-printable, and
	// the attachment part's body, base64 in 76-column lines.
	textTail, htmlTail []byte
	pdf64              []byte
}

// NewGenerator returns a generator of messages of shape (default Plain)
// and about size bytes (default 5,120; for PDF, the size of the message
// without its attachment).
func NewGenerator(shape Shape, size int) (*Generator, error) {
	if shape == "" {
		shape = Plain
	}
	if size <= 0 {
		size = 5 << 10
	}
	g := &Generator{shape: shape, size: size}
	switch shape {
	case Plain:
	case Multipart, PDF:
		g.textTail = qp(textTail)
		g.htmlTail = qp(htmlTail)
		if shape == PDF {
			g.pdf64 = base64Lines(FakePDF(PDFSize))
		}
	default:
		return nil, fmt.Errorf("unknown message shape %q (known: %s, %s, %s)", shape, Plain, Multipart, PDF)
	}
	return g, nil
}

// Message returns message number n from from to to.
func (g *Generator) Message(from, to string, n int) []byte {
	if g.shape == Plain {
		return Body(from, to, n, g.size)
	}
	return g.notification(from, to, n)
}

// Body returns a message of about size bytes from from to to.
func Body(from, to string, n, size int) []byte {
	b := make([]byte, 0, size+256)
	b = fmt.Appendf(b, "From: <%s>\r\nTo: <%s>\r\nSubject: carga %d\r\nMessage-ID: <load-%d-%d@smtpload.invalid>\r\n\r\n",
		from, to, n, n, time.Now().UnixNano())
	const line = "Lorem ipsum dolor sit amet, consectetur adipiscing\r\n"
	for len(b)+len(line) <= size {
		b = append(b, line...)
	}
	return b
}

// person is who message n is about: a name, a document number (DNI) and
// a case number, all from n.
type person struct {
	name, dni, file string
	n               int
}

var (
	givenNames = []string{"María", "José", "Rosa", "Luis", "Carmen", "Juan", "Ana", "Jorge", "Lucía", "Pedro", "Elena", "Víctor", "Ñusta", "Raúl"}
	surnames   = []string{"Quispe", "Huamán", "Mamani", "Flores", "Rodríguez", "Sánchez", "García", "Rojas", "Chávez", "Torres",
		"Díaz", "Vásquez", "Ramírez", "Castillo", "Peña", "Gutiérrez", "Cárdenas"}
)

func personFor(n int) person {
	h := mix(uint64(n))
	return person{
		name: givenNames[h%uint64(len(givenNames))] + " " + surnames[(h>>8)%uint64(len(surnames))] + " " +
			surnames[(h>>16)%uint64(len(surnames))],
		dni:  fmt.Sprintf("%08d", (h>>24)%100_000_000),
		file: fmt.Sprintf("%04d-2026-SERVIR/GDSRH", n%10_000),
		n:    n,
	}
}

// mix is SplitMix64's finaliser: a well-spread number from n.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// notification is a Multipart (or PDF) message: the personalised heads of
// the text and HTML bodies, then filler lines (a table of the process's
// stages, in ASCII, which quoted-printable leaves as it is) to bring the
// message to about g.size bytes, then the static tails.
func (g *Generator) notification(from, to string, n int) []byte {
	p := personFor(n)
	h := mix(uint64(n) ^ 0x5ea1)
	alt := fmt.Sprintf("----=_Part_%d_%d.%d", 2*n, h%1_000_000_000, 1_764_000_000_000+int64(n))
	mixed := fmt.Sprintf("----=_Part_%d_%d.%d", 2*n+1, (h>>32)%1_000_000_000, 1_764_000_000_000+int64(n))
	subject := mime.QEncoding.Encode("utf-8", fmt.Sprintf("Convocatoria CAS N° %s – resultado de la evaluación curricular de %s", p.file, p.name))
	subject = strings.ReplaceAll(subject, "?= =?", "?=\r\n =?") // folded between its encoded-words
	var b bytes.Buffer
	b.Grow(g.size + len(g.pdf64) + 1024)
	fmt.Fprintf(&b, "From: =?utf-8?q?SERVIR_-_Talento_Per=C3=BA?= <%s>\r\nTo: <%s>\r\nSubject: %s\r\n"+
		"Date: %s\r\nMessage-ID: <load-%d-%d@smtpload.invalid>\r\nMIME-Version: 1.0\r\nX-Mailer: SISCAS 2.4 (JavaMail 1.4.7)\r\n",
		from, to, subject, time.Date(2026, 12, 7, 9, 0, 0, 0, time.FixedZone("", -5*3600)).Add(time.Duration(n)*time.Second).Format(time.RFC1123Z),
		n, time.Now().UnixNano())
	if g.shape == PDF {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\nThis is a multi-part message in MIME format.\r\n--%s\r\n", mixed, mixed)
	}
	fmt.Fprintf(&b, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n", alt)
	textHead, htmlHead := qp(p.text()), qp(p.html())
	const textPart = "--%s\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
	const htmlPart = "\r\n--%s\r\nContent-Type: text/html; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
	fixed := b.Len() + len(textPart) + len(htmlPart) - 4 + 2*len(alt) + len(textHead) + len(htmlHead) +
		len(g.textTail) + len(g.htmlTail) + len("\r\n--"+alt+"--\r\n")
	gap := g.size - fixed
	fmt.Fprintf(&b, textPart, alt)
	b.Write(textHead)
	fill(&b, gap/3, textRow)
	b.Write(g.textTail)
	fmt.Fprintf(&b, htmlPart, alt)
	b.Write(htmlHead)
	fill(&b, gap-gap/3, htmlRow)
	b.Write(g.htmlTail)
	fmt.Fprintf(&b, "\r\n--%s--\r\n", alt)
	if g.shape == PDF {
		fmt.Fprintf(&b, "\r\n--%s\r\nContent-Type: application/pdf; name=\"constancia-%s.pdf\"\r\nContent-Transfer-Encoding: base64\r\n"+
			"Content-Disposition: attachment; filename=\"constancia-%s.pdf\"\r\n\r\n", mixed, p.dni, p.dni)
		b.Write(g.pdf64)
		fmt.Fprintf(&b, "\r\n--%s--\r\n", mixed)
	}
	return b.Bytes()
}

// The filler rows: ASCII without "=", under 76 columns, so that they are
// their own quoted-printable encoding.
const (
	textRow = "  Etapa %d: publicada en el portal Talento Peru, consulte el cronograma.\r\n"
	htmlRow = "<tr><td>Etapa %d</td><td>Publicada en el portal Talento Peru</td></tr>\r\n"
)

// fill appends rows (numbered from 1) while they fit in n bytes.
func fill(b *bytes.Buffer, n int, row string) {
	for i := 1; ; i++ {
		l := len(row) - 2 + len(strconv.Itoa(i))
		if l > n {
			return
		}
		fmt.Fprintf(b, row, i)
		n -= l
	}
}

func (p person) text() string {
	return fmt.Sprintf(`Estimado(a) %s (DNI %s):

Le informamos que el Comité de Selección de la Convocatoria CAS N° %s ha
publicado los resultados de la evaluación curricular. Su postulación N° %d
ha sido calificada como APTA y pasa a la etapa de entrevista personal.

Fecha de la entrevista: %s
Lugar: Av. Cuba 699, Jesús María, Lima (o por videoconferencia, según se le indique)

Cronograma del proceso:
`, p.name, p.dni, p.file, 100_000+p.n, time.Date(2026, 12, 14, 9, 0, 0, 0, time.UTC).Add(time.Duration(p.n%480)*time.Minute).Format("02/01/2006 15:04"))
}

func (p person) html() string {
	return fmt.Sprintf(`<!DOCTYPE html>
<html lang="es"><head><meta charset="utf-8"><title>Convocatoria CAS</title></head>
<body style="font-family: Arial, Helvetica, sans-serif; font-size: 14px; color: #333333;">
<table width="600" cellpadding="0" cellspacing="0" border="0" align="center">
<tr><td style="background-color: #c8102e; color: #ffffff; padding: 16px; font-size: 18px;">
<b>Autoridad Nacional del Servicio Civil &ndash; Talento Perú</b></td></tr>
<tr><td style="padding: 16px;">
<p>Estimado(a) <b>%s</b> (DNI %s):</p>
<p>Le informamos que el Comité de Selección de la Convocatoria CAS N° <b>%s</b>
ha publicado los resultados de la evaluación curricular. Su postulación
N° <b>%d</b> ha sido calificada como <b style="color: #007a33;">APTA</b>
y pasa a la etapa de entrevista personal.</p>
<p>Fecha de la entrevista: <b>%s</b></p>
<table cellpadding="4" cellspacing="0" border="1" style="border-collapse: collapse;">
`, p.name, p.dni, p.file, 100_000+p.n, time.Date(2026, 12, 14, 9, 0, 0, 0, time.UTC).Add(time.Duration(p.n%480)*time.Minute).Format("02/01/2006 15:04"))
}

const textTail = `
Para más información, ingrese a https://www.servir.gob.pe/talento-peru/ con su
usuario. Este es un mensaje automático; por favor, no responda a este correo.

Atentamente,
Gerencia de Desarrollo del Sistema de Recursos Humanos
Autoridad Nacional del Servicio Civil – SERVIR
`

const htmlTail = `</table>
<p>Para más información, ingrese a
<a href="https://www.servir.gob.pe/talento-peru/">Talento Perú</a> con su usuario.</p>
<p style="font-size: 12px; color: #777777;">Este es un mensaje automático; por favor,
no responda a este correo.</p>
<p>Atentamente,<br>Gerencia de Desarrollo del Sistema de Recursos Humanos<br>
Autoridad Nacional del Servicio Civil &ndash; SERVIR</p>
</td></tr></table>
</body></html>
`

// qp is s (LF lines) quoted-printable with CRLF line ends.
func qp(s string) []byte {
	var b bytes.Buffer
	w := quotedprintable.NewWriter(&b)
	_, _ = w.Write([]byte(s))
	_ = w.Close()
	out := b.Bytes()
	if !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, "\r\n"...)
	}
	return out
}

// base64Lines is b in base64, 76 columns a line, each ending in CRLF.
func base64Lines(b []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	out.Grow(len(enc) + len(enc)/76*2 + 2)
	for len(enc) > 76 {
		out.WriteString(enc[:76])
		out.WriteString("\r\n")
		enc = enc[76:]
	}
	out.WriteString(enc)
	out.WriteString("\r\n")
	return []byte(out.String())
}
