package dkimkey

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// signedHeaders are signed, and over-signed: each is listed once more than
// it appears, so a header added later breaks the signature (RFC 6376 §8.15).
var signedHeaders = []string{"From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To",
	"Content-Type", "MIME-Version", "List-Unsubscribe", "List-Unsubscribe-Post", "Feedback-ID"}

// Sign adds one DKIM-Signature per key to msg (relaxed/relaxed, the
// signedHeaders over-signed), with an expiry ttl after now when ttl > 0.
func Sign(msg []byte, keys []Key, now time.Time, ttl time.Duration) ([]byte, error) {
	head := msg
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		head = msg[:i+2]
	}
	var names []string
	for _, h := range signedHeaders {
		n := countHeader(head, h)
		for range n + 1 {
			names = append(names, h)
		}
	}
	var sigs bytes.Buffer
	for _, k := range keys {
		opts := &dkim.SignOptions{Domain: k.Domain, Selector: k.Selector, Signer: k.Signer,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
			HeaderKeys: names}
		if ttl > 0 {
			opts.Expiration = now.Add(ttl)
		}
		s, err := dkim.NewSigner(opts)
		if err != nil {
			return nil, fmt.Errorf("dkim: %w", err)
		}
		if _, err := s.Write(msg); err != nil {
			return nil, fmt.Errorf("dkim: %w", err)
		}
		if err := s.Close(); err != nil {
			return nil, fmt.Errorf("dkim: %w", err)
		}
		sigs.WriteString(s.Signature())
	}
	return append(sigs.Bytes(), msg...), nil
}

func countHeader(head []byte, name string) int {
	n := 0
	for _, line := range bytes.Split(head, []byte("\r\n")) {
		if i := bytes.IndexByte(line, ':'); i > 0 && line[0] != ' ' && line[0] != '\t' &&
			strings.EqualFold(string(bytes.TrimSpace(line[:i])), name) {
			n++
		}
	}
	return n
}
