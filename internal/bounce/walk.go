package bounce

import (
	"bytes"
	"regexp"
	"strings"
)

// message is an inbound message with its MIME tree flattened: the leaves
// in order and the parts the reader looks for, found by type wherever they
// are. A message/rfc822 part is a leaf: the returned message is not
// searched for reports of its own.
type message struct {
	header     header
	reportType string // report-type of the first multipart/report, lower case
	parts      []*part
	status     *part // message/delivery-status or message/global-delivery-status
	feedback   *part // message/feedback-report
	returned   *part // message/rfc822, message/global, text/rfc822-headers …
	human      string
	humanDone  bool
}

// newMessage walks the body of a message whose header is h.
func newMessage(h header, body []byte) *message {
	m := &message{header: h}
	m.add(h, body, 0)
	for _, p := range m.parts {
		switch p.ctype {
		case "message/delivery-status", "message/global-delivery-status":
			if m.status == nil {
				m.status = p
			}
		case "message/feedback-report":
			if m.feedback == nil {
				m.feedback = p
			}
		case "message/rfc822", "message/global", "text/rfc822-headers",
			"message/rfc822-headers", "message/global-headers", "message/partial":
			if m.returned == nil {
				m.returned = p
			}
		}
	}
	return m
}

// add appends the leaves of one entity (header h, body) to m.parts.
func (m *message) add(h header, body []byte, depth int) {
	if len(m.parts) >= maxParts {
		return
	}
	mt, params := mediaType(h.get("content-type"))
	if strings.HasPrefix(mt, "multipart/") && depth < maxDepth {
		if mt == "multipart/report" && m.reportType == "" {
			m.reportType = strings.ToLower(strings.TrimSpace(params["report-type"]))
		}
		if subs := splitMultipart(decodeBody(h.get("content-transfer-encoding"), body), params["boundary"]); subs != nil {
			for _, s := range subs {
				sh, sb, _ := parseHeader(s)
				m.add(sh, sb, depth+1)
			}
			return
		}
		mt = "text/plain" // no boundary found: read it as text
	}
	m.parts = append(m.parts, &part{header: h, ctype: mt, params: params, raw: body})
}

// splitMultipart cuts body at the lines "--boundary"; the preamble and
// epilogue are dropped, a missing closing delimiter ends the last part at
// the end of the body. nil means the boundary never occurs.
func splitMultipart(body []byte, boundary string) [][]byte {
	if boundary == "" {
		return nil
	}
	delim := []byte("--" + boundary)
	var parts [][]byte
	start, pos, found := -1, 0, false
	for pos <= len(body) {
		i := bytes.Index(body[pos:], delim)
		if i < 0 {
			break
		}
		i += pos
		after := i + len(delim)
		end := len(body)
		if j := bytes.IndexByte(body[after:], '\n'); j >= 0 {
			end = after + j
		}
		closing := bytes.HasPrefix(body[after:], []byte("--"))
		if (i > 0 && body[i-1] != '\n') || (!closing && len(bytes.TrimSpace(body[after:end])) > 0) {
			pos = after
			continue
		}
		found = true
		if start >= 0 {
			parts = append(parts, bytes.TrimSuffix(body[start:i], []byte("\n")))
		}
		if closing {
			start = -1
			break
		}
		start, pos = min(end+1, len(body)), end+1
	}
	if !found {
		return nil
	}
	if start >= 0 && start < len(body) {
		parts = append(parts, body[start:])
	}
	return parts
}

// humanText is the text a person would read: the decoded text/plain parts
// (or, without any, the text of the HTML ones), not the report parts and
// not the returned message.
func (m *message) humanText() string {
	if m.humanDone {
		return m.human
	}
	m.humanDone = true
	var plain, html strings.Builder
	for _, p := range m.parts {
		switch {
		case p == m.status || p == m.feedback || p == m.returned:
		case p.ctype == "text/plain" || p.ctype == "text" || p.ctype == "":
			plain.Write(p.decoded())
			plain.WriteByte('\n')
		case p.ctype == "text/html":
			html.WriteString(stripTags(string(p.decoded())))
			html.WriteByte('\n')
		}
	}
	m.human = plain.String()
	if strings.TrimSpace(m.human) == "" {
		m.human = html.String()
	}
	if len(m.human) > maxHuman {
		m.human = m.human[:maxHuman]
	}
	return m.human
}

// maxHuman bounds the human text the text rules read.
const maxHuman = 512 << 10

// allText is every decoded text or message part, for token searches when
// there is no returned part.
func (m *message) allText() []byte {
	var b []byte
	for _, p := range m.parts {
		if strings.HasPrefix(p.ctype, "text/") || strings.HasPrefix(p.ctype, "message/") {
			b = append(b, p.decoded()...)
			b = append(b, '\n')
		}
	}
	return b
}

var (
	tagRe     = regexp.MustCompile(`(?s)<(?:style|script)[^>]*>.*?</(?:style|script)>|<[^>]*>`)
	entityRep = strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&", "&quot;", `"`, "&#39;", "'", "&nbsp;", " ")
)

// stripTags turns HTML into rough text: tags dropped, common entities read.
func stripTags(s string) string {
	return entityRep.Replace(tagRe.ReplaceAllString(s, " "))
}
