package mailerr_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/servir-pe/envios/internal/mailerr"
)

var errCause = errors.New("the cause")

func TestError(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		kind       error
		cause      error // nil: none
		field      string
		public     string
		errorText  string
		notMatched error
	}{
		{"new", mailerr.New(mailerr.ErrContent, "subject", "subject contains %s", "CR\r\nBcc: x"),
			mailerr.ErrContent, nil, "subject", "subject contains CR  Bcc: x", "mailing: invalid content: subject contains CR  Bcc: x", mailerr.ErrAddress},
		{"wrap", mailerr.Wrap(mailerr.ErrAddress, "to", errCause, "\"x\": no @"),
			mailerr.ErrAddress, errCause, "to", "\"x\": no @", "mailing: invalid address: \"x\": no @", mailerr.ErrContent},
		{"in gives a field", mailerr.In("cc", mailerr.New(mailerr.ErrAddress, "", "bad")),
			mailerr.ErrAddress, nil, "cc", "bad", "mailing: invalid address: bad", mailerr.ErrTooBig},
		{"in keeps a field", mailerr.In("cc", mailerr.New(mailerr.ErrAddress, "to", "bad")),
			mailerr.ErrAddress, nil, "to", "bad", "mailing: invalid address: bad", mailerr.ErrTooBig},
		{"within labels", mailerr.Within("message", "From", mailerr.New(mailerr.ErrAddress, "", "bad")),
			mailerr.ErrAddress, nil, "message", "From: bad", "mailing: invalid address: From: bad", mailerr.ErrContent},
		{"no public text", &mailerr.Error{Kind: mailerr.ErrClosed},
			mailerr.ErrClosed, nil, "", "", "mailing: mailer closed", mailerr.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ok := mailerr.As(tt.err)
			if !ok {
				t.Fatalf("%v is not an *Error", tt.err)
			}
			if !errors.Is(tt.err, tt.kind) || errors.Is(tt.err, tt.notMatched) {
				t.Fatalf("errors.Is: kind %v %v, other %v %v", tt.kind, errors.Is(tt.err, tt.kind), tt.notMatched, errors.Is(tt.err, tt.notMatched))
			}
			if tt.cause != nil && !errors.Is(tt.err, tt.cause) {
				t.Fatalf("the cause %v is not reached", tt.cause)
			}
			if e.Field != tt.field || e.Public != tt.public || tt.err.Error() != tt.errorText {
				t.Fatalf("field %q, public %q, text %q; want %q, %q, %q", e.Field, e.Public, tt.err.Error(), tt.field, tt.public, tt.errorText)
			}
			if strings.ContainsAny(e.Public, "\r\n") {
				t.Fatalf("public text %q holds a line break", e.Public)
			}
		})
	}
	// Other errors pass through In and Within unchanged.
	if err := mailerr.In("to", errCause); err != errCause {
		t.Fatalf("In changed a plain error: %v", err)
	}
	if err := mailerr.Within("to", "x", errCause); err != errCause {
		t.Fatalf("Within changed a plain error: %v", err)
	}
	if _, ok := mailerr.As(errCause); ok {
		t.Fatal("a plain error is an *Error")
	}
}
