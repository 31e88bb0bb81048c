package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/emersion/go-smtp"

	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/quota"
)

// The replies the relay gives in its own words.
var (
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errRevoked      = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required: the credential was revoked"}
	errAuthFailed   = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	errAuthBackend  = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure, try again later"}
	errAuthThrottle = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many failed logins, try again later"}
	errAuthSyntax   = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Malformed authentication response"}
	errAuthzid      = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid: the authorisation identity must be empty or the username"}
	errNullSender   = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "A submitted message needs a sender address"}
	errBareLF       = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Bare CR or LF in the message: lines must end with CRLF (SMTP smuggling is refused)"}
	errHeaderSize   = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message header too big"}
	errHeaderCount  = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Too many header fields"}
	errTooLongLine  = &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 4, 0}, Message: "Line too long"}
	errTempFail     = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary failure, try again later"}
	errNoMemory     = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage, try again later"}
	errShutdown     = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down, try again later"}
	errDisabled     = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "The account is disabled"}
)

// stage names the command an error answers, for the replies that differ
// by stage.
type stage int

const (
	atAuth stage = iota
	atMail
	atRcpt
	atData
)

// reply is the one place where errors become SMTP replies. It returns an
// unwrapped *smtp.SMTPError — the only kind go-smtp writes as given — and
// logs what it hides: internal error text never reaches the client. A
// refusal by the library (*mailing.Error) is answered by its Kind, with
// its Public text where the reply names what was wrong; anything else is a
// failure of ours, answered 451 4.3.0 (454 4.7.0 during AUTH).
func reply(log *slog.Logger, at stage, err error) *smtp.SMTPError {
	var se *smtp.SMTPError
	var me *mailing.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		return se
	case errors.Is(err, smtp.ErrDataTooLarge):
		return smtp.ErrDataTooLarge
	case errors.Is(err, smtp.ErrTooLongLine):
		return errTooLongLine
	case errors.As(err, &me):
		if r := refused(at, me); r != nil {
			return r
		}
	}
	if at == atAuth {
		log.Error("authentication backend failed", "err", err)
		return errAuthBackend
	}
	// A client that hung up, or gave up a message in the middle of DATA or
	// BDAT, is not a failure of ours.
	if !errors.Is(err, context.Canceled) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, smtp.ErrDataReset) {
		log.Error("temporary failure", "err", err)
	}
	return errTempFail
}

// refused is the reply to a refusal by the library, by its kind; nil for
// a kind a submission session cannot meet (then it is our failure).
func refused(at stage, e *mailing.Error) *smtp.SMTPError {
	switch e.Kind {
	case mailing.ErrTooBig:
		return smtp.ErrDataTooLarge
	case quota.ErrInsufficient:
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Message pool exhausted: " + e.Public}
	case mailing.ErrSenderNotAllowed:
		return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender address not allowed for this account"}
	case mailing.ErrTooManyRecipients:
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"}
	case mailing.ErrAddress:
		switch at {
		case atMail:
			return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: "Bad sender address syntax"}
		case atRcpt:
			return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad recipient address syntax"}
		}
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Invalid address in the message: " + clip(e.Public)}
	case mailing.ErrContent:
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Message refused: " + clip(e.Public)}
	case mailing.ErrNoDKIMKey:
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "The From domain has no DKIM key here; mail from it is not accepted"}
	case quota.ErrDisabled:
		return errDisabled
	case quota.ErrOutsidePeriod:
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "The message pool is outside its period"}
	case mailing.ErrClosed:
		return errShutdown
	}
	return nil
}

// poolExhausted is the reply to a RCPT the account's pool cannot pay for.
func poolExhausted(account string, remaining, need int64) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 7, 1},
		Message: fmt.Sprintf("Message pool exhausted: account %s has %d messages left, %d needed", account, remaining, need)}
}

// clip keeps a public text to 300 bytes.
func clip(s string) string {
	if len(s) > 300 {
		return s[:300]
	}
	return s
}

var errNUL = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "NUL character in the message"}
