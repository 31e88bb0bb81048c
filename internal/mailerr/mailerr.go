// Package mailerr holds the errors the mailing library gives about a
// request: the sentinels callers branch on and Error, which carries the
// kind, the input field, a text fit for the client and the cause. The
// doors (the relay's replies, the HTTPS API's answers) translate an Error
// by its Kind, each in one function; they never parse error text.
package mailerr

import (
	"errors"
	"fmt"
	"strings"
)

// oneLine keeps a public text on one line.
var oneLine = strings.NewReplacer("\r", " ", "\n", " ", "\x00", " ")

// The kinds of request errors. mailing re-exports each under the same
// name; quota's sentinels (quota.ErrInsufficient, ErrDisabled, …) are
// kinds too when mailing refuses a request for them.
var (
	ErrAddress           = errors.New("mailing: invalid address")
	ErrContent           = errors.New("mailing: invalid content")
	ErrTooBig            = errors.New("mailing: message too big")
	ErrTooManyRecipients = errors.New("mailing: too many recipients")
	ErrNoRecipients      = errors.New("mailing: no recipients")
	ErrSenderNotAllowed  = errors.New("mailing: sender not allowed for the account")
	ErrNoDKIMKey         = errors.New("mailing: no DKIM key for the From domain")
	ErrNotFound          = errors.New("mailing: no such message")
	ErrCancelled         = errors.New("mailing: batch cancelled")
	ErrClosed            = errors.New("mailing: mailer closed")
)

// Error is a refusal of a request, decided on its own merits (not a
// database or other infrastructure failure).
type Error struct {
	// Kind is one of the sentinels above, or of quota's; errors.Is(err,
	// Kind) is true.
	Kind error
	// Field is the input the error is about, named as the HTTPS API names
	// it ("from", "to", "subject", "headers", "attachments", "data", …);
	// empty when it is about the request as a whole.
	Field string
	// Public says what is wrong in words fit for the client: it never holds
	// internal detail, and never CR or LF.
	Public string
	// Err is the cause, if any (a *quota.InsufficientError, an address's
	// *AddressError, a template's error); errors.As reaches it.
	Err error
}

// Error is the kind's text and the public text: "mailing: invalid
// content: subject contains CR, LF or NUL".
func (e *Error) Error() string {
	if e.Public == "" {
		return e.Kind.Error()
	}
	return e.Kind.Error() + ": " + e.Public
}

// Unwrap gives the kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// New returns an Error of kind about field with a formatted public text.
func New(kind error, field, format string, args ...any) *Error {
	return &Error{Kind: kind, Field: field, Public: oneLine.Replace(fmt.Sprintf(format, args...))}
}

// Wrap returns an Error of kind about field whose cause is err.
func Wrap(kind error, field string, err error, public string) *Error {
	return &Error{Kind: kind, Field: field, Public: oneLine.Replace(public), Err: err}
}

// Content is an ErrContent about field.
func Content(field, format string, args ...any) *Error {
	return New(ErrContent, field, format, args...)
}

// In gives an Error without a field the field name; other errors are
// returned as they are.
func In(field string, err error) error {
	var e *Error
	if errors.As(err, &e) && e.Field == "" {
		c := *e
		c.Field = field
		return &c
	}
	return err
}

// Within is In with a label put before the public text ("From: …"), for
// an error about one part of a field (a header of a submitted message).
func Within(field, label string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		c := *e
		if c.Field == "" {
			c.Field = field
		}
		c.Public = label + ": " + c.Public
		return &c
	}
	return err
}

// As returns the Error in err's chain, if any.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
