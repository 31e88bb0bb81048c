package mailing

import (
	"mime"
	"net/textproto"
	"strings"

	"github.com/servir-pe/envios/internal/compose"
	"github.com/servir-pe/envios/internal/mailerr"
)

// contentErr is an ErrContent about field.
func contentErr(field, format string, args ...any) error {
	return mailerr.Content(field, format, args...)
}

// Header is an extra header to add to a message.
type Header = compose.Header

// reservedHeaders are set by envios itself (from Message fields, or at
// delivery) and may not be given as extra headers.
var reservedHeaders = map[string]bool{
	"From": true, "Sender": true, "To": true, "Cc": true, "Bcc": true, "Reply-To": true,
	"Subject": true, "Date": true, "Message-Id": true, "Mime-Version": true,
	"Content-Type": true, "Content-Transfer-Encoding": true, "Content-Disposition": true,
	"Return-Path": true, "Received": true, "Dkim-Signature": true,
	"List-Unsubscribe": true, "List-Unsubscribe-Post": true,
}

func validateHeaders(hs []Header) error {
	if len(hs) > 50 {
		return contentErr("headers", "more than 50 extra headers")
	}
	for _, h := range hs {
		if h.Name == "" || len(h.Name) > 76 {
			return contentErr("headers", "header name %q must be 1 to 76 characters", h.Name)
		}
		// RFC 5322 allows any printable ASCII but ':' in a field name; real
		// parsers (Go's net/textproto among them) accept only tokens, so
		// envios keeps to letters, digits and hyphens.
		for i := 0; i < len(h.Name); i++ {
			if c := h.Name[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return contentErr("headers", "header name %q has a character not allowed in a field name (letters, digits, hyphens)", h.Name)
			}
		}
		canon := textproto.CanonicalMIMEHeaderKey(h.Name)
		if reservedHeaders[canon] || strings.HasPrefix(canon, "X-Envios-") {
			return contentErr("headers", "header %s is set by envios and cannot be given as an extra header", canon)
		}
		if err := compose.CheckHeaderValue("headers", "header "+canon, h.Value); err != nil {
			return err
		}
	}
	return nil
}

// Attachment is a file attached to a message, or shown inline (an image
// an HTML body refers to as cid:ContentID) when ContentID is set.
type Attachment = compose.Attachment

func validateAttachments(as []Attachment) error {
	for i := range as {
		a := &as[i]
		if err := compose.CheckHeaderValue("attachments", "attachment file name", a.Filename); err != nil {
			return err
		}
		if a.Filename == "" || strings.ContainsAny(a.Filename, `/\`) {
			return contentErr("attachments", "attachment %d: file name %q must be a plain, non-empty name", i, a.Filename)
		}
		if a.ContentType == "" {
			if i := strings.LastIndexByte(a.Filename, '.'); i >= 0 {
				a.ContentType = mime.TypeByExtension(a.Filename[i:])
			}
			if a.ContentType == "" {
				a.ContentType = "application/octet-stream"
			}
		}
		if _, _, err := mime.ParseMediaType(a.ContentType); err != nil || strings.ContainsAny(a.ContentType, "\r\n") {
			return contentErr("attachments", "attachment %s: content type %q is not a media type", a.Filename, a.ContentType)
		}
		if err := compose.CheckHeaderValue("attachments", "attachment content id", a.ContentID); err != nil {
			return err
		}
		if strings.ContainsAny(a.ContentID, "<> ") {
			return contentErr("attachments", "attachment %s: content id %q must not contain <, > or spaces", a.Filename, a.ContentID)
		}
	}
	return nil
}
